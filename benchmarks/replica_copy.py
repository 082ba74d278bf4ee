"""Replicating one archive to a second S3 endpoint against a bare `aws s3 cp` between the same
endpoints, in one run.

    .venv/bin/python -m benchmarks.replica_copy --scale 20 --scale 150 [--repeat 3]

For each scale N it builds the database backup_throughput builds, backs it up into S3 (one
moto server, bucket `primary`), and starts a second moto server (bucket `replica`): another
region's endpoint, so every copy is streamed through this machine. Then, alternating, each in
its own process and timed whole (interpreter start-up and imports included on both sides):

  bare        aws s3 cp s3://primary/KEY - | aws s3 cp - s3://replica/KEY
  copy        the replica asset's copy alone: ObjectStore.copy_from (streamed, 8 MiB parts)
  replicate   the replica asset's whole work: the copy, then the proof (read back whole from
              the replica: size and SHA-256, every byte decoded by zstd and pg_restore), then
              the manifest

and prints the medians, the ratios against bare, and the peak RSS of every process involved.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from backup_pipelines.core.servers.scratch import free_port
from backup_pipelines_demo.cluster import LocalCluster
from benchmarks.backup_throughput import (
    build_database,
    child_command,
    compare_alternating,
    scales_main,
)

DAY = dt.datetime.now(dt.UTC).date().isoformat()
BARE = "bare aws s3 cp | aws s3 cp"


def child(mode: str, database: str) -> None:
    """The measured work, in a fresh process (BACKUP_PIPELINES_CONFIG names the file), as the
    replica asset does it, without Dagster: prints the seconds of the work alone."""
    from backup_pipelines.core.common.client_tools import find_client_tools
    from backup_pipelines.core.common.config import load_config
    from backup_pipelines.core.common.stores import replica_store, stores_from_config
    from backup_pipelines.core.postgres.replica import archived_manifest, replicate_archive

    config = load_config()
    archive, replica = stores_from_config(config).archive, replica_store(config)
    manifest = archived_manifest(archive, database, DAY)
    tools = find_client_tools(config.pg_bin_dir)
    started = time.perf_counter()
    if mode == "copy":
        replica.copy_from(archive, manifest.object_key, f"copy-{time.monotonic_ns()}")
    else:
        outcome = replicate_archive(archive, replica, manifest, tools, None, None, None)
        if not outcome.passed:
            raise SystemExit(outcome.description)
    print(time.perf_counter() - started)


def moto(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while subprocess.run(
        ["bash", "-c", f"echo > /dev/tcp/127.0.0.1/{port}"], capture_output=True
    ).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("moto did not start")
        time.sleep(0.2)
    return server


def back_up(config: Path, database: str, env: dict[str, str]) -> tuple[str, int]:
    """The day's dump and archive of `database` in the primary bucket; its key and size."""
    script = f"""
from backup_pipelines.core.postgres.archive import archive_dump
from backup_pipelines.core.postgres.dump import take_dump
from backup_pipelines.defs.resources import BackupSettings
settings = BackupSettings(config_path={str(config)!r})
stores = settings.stores()
ref, _ = take_dump(settings.database({database!r}).connection, stores.dumps, {DAY!r},
                   settings.dump_settings())
ref, manifest = archive_dump(stores.dumps, stores.archive, ref, None)
print(manifest.object_key, manifest.size_bytes)
"""
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    return output[0], int(output[1])


def run_scale(cluster: LocalCluster, work_dir: Path, scale: int, repeat: int) -> None:
    database = f"bench_s{scale}"
    print(f"\n== scale {scale}: building {database} ...", flush=True)
    assert cluster.bin_dir is not None
    build_database(cluster, cluster.bin_dir, database, scale)
    ports = free_port(), free_port()
    servers = [moto(port) for port in ports]
    try:
        endpoints = [f"http://127.0.0.1:{port}" for port in ports]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "BENCH_PASSWORD": cluster.superuser_password,
        }
        for endpoint, bucket in zip(endpoints, ("primary", "replica"), strict=True):
            subprocess.run(
                ["aws", "s3", "mb", f"s3://{bucket}", "--endpoint-url", endpoint],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        config = work_dir / f"bench_s{scale}.yaml"
        url = cluster.url(database).replace(cluster.superuser_password, "${BENCH_PASSWORD}")
        config.write_text(
            yaml.safe_dump(
                {
                    "storage": {"s3": {"bucket": "primary", "endpoint_url": endpoints[0]}},
                    "replica": {"s3": {"bucket": "replica", "endpoint_url": endpoints[1]}},
                    "databases": {database: {"url": url}},
                }
            )
        )
        env["BACKUP_PIPELINES_CONFIG"] = str(config)
        key, size = back_up(config, database, env)
        print(f"   archive (zstd) {size / 1e6:.0f} MB", flush=True)
        bare = (
            f"aws s3 cp --endpoint-url {endpoints[0]} s3://primary/archive/{key} - | "
            f"aws s3 cp --endpoint-url {endpoints[1]} - s3://replica/bare/{key}"
        )
        argvs = {
            BARE: ["bash", "-o", "pipefail", "-c", bare],
            "copy (copy_from, streamed)": child_command(
                "benchmarks.replica_copy", "copy", database
            ),
            "replicate (copy + proof)": child_command(
                "benchmarks.replica_copy", "replicate", database
            ),
        }
        compare_alternating(argvs, env, work_dir, repeat)
    finally:
        for server in servers:
            server.kill()
            server.wait()


def main() -> None:
    scales_main(__doc__, child, ("MODE", "DATABASE"), run_scale, "bench-replica-")


if __name__ == "__main__":
    main()
