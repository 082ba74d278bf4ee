"""Point-in-time recovery against bare pgBackRest, measured in one run:

    .venv/bin/python -m benchmarks.pitr --scale 150 --load-seconds 120 --repeat 3

1. a full base backup through Dagster (the base_backup asset: backup, info, verify, the window)
   vs bare `pgbackrest backup --type=full` with the same options, alternately, medians;
2. the PITR restore test (restore, start, replay, promotion, validation, removal) vs bare
   `pgbackrest restore --type=time` + `pg_ctl start` until promoted, to a target made the same
   way, alternately, medians; the RTO of the server;
3. the archive lag (the RPO) sampled every second under `pgbench -T` load, with
   archive_timeout = 60 s as the README recommends: median, p95, max.

The pgbench database is built once in --home and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import yaml
from dagster import DagsterInstance, materialize

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.postgres.dump import utc_today
from backup_pipelines.core.servers.archiver import archiver_status, wait_until_archived
from backup_pipelines.core.servers.markers import MarkerPair, write_markers
from backup_pipelines.core.servers.pgbackrest import repository_from_config
from backup_pipelines.core.servers.pitr_test import run_pitr_restore_test, target_time
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster, archive_with_pgbackrest, free_port

SERVER = "bench"
PASSWORD = "bench-superuser-password"


def prepare(home: Path, scale: int) -> tuple[LocalCluster, Path]:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    cluster = LocalCluster(home / "server", free_port(), PASSWORD)
    config = home / "backup_pipelines.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"local": {"path": str(home / "backups")}},
                "databases": {"pgbench": {"url": cluster.url("pgbench")}},
                "servers": {
                    SERVER: {
                        "url": cluster.url(),
                        "data_directory": str(cluster.data_dir),
                        "socket_directory": str(cluster.root),
                        "pgbackrest": {"path": str(home / "repository")},
                    }
                },
            }
        )
    )
    fresh = not cluster.initialized
    if fresh:
        cluster.init()
    repository = repository_from_config(load_config(config), SERVER)
    archive_with_pgbackrest(cluster, SERVER, {**repository.options, **repository.secrets})
    cluster.start()
    settings = BackupSettings(config_path=str(config))
    settings.server_engine(SERVER).create_stanza()
    if fresh:
        print(f"building a scale-{scale} pgbench database (once; reused from {home})")
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE pgbench")
        subprocess.run(
            [
                str(cluster.bin_dir / "pgbench"),
                "-i",
                "-q",
                "-s",
                str(scale),
                cluster.url("pgbench"),
            ],
            check=True,
        )
    # Time nothing while the archiver still works through a backlog (pgbench -i writes GBs).
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    source = Connection.from_url(SERVER, cluster.url())
    wait_until_archived(SERVER, source, segment, timeout=3600)
    return cluster, config


def timed(action) -> float:
    os.sync()  # no write-back of the previous run's files competes with this one
    started = time.monotonic()
    action()
    return time.monotonic() - started


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def backup_figures(config: Path, repeat: int) -> dict[str, float]:
    """Bare and through-Dagster full backups, alternately, `repeat` times each; medians. Each
    pair starts from one full backup in the repository, so every `verify` reads the same."""
    settings = BackupSettings(config_path=str(config))
    engine = settings.server_engine(SERVER)
    defs = build_definitions(load_config(config), str(config))
    key = names.server_key(SERVER, names.BASE_BACKUP)
    op_name = defs.resolve_assets_def(key).op.name

    def through_dagster() -> dict[str, float]:
        with DagsterInstance.ephemeral() as instance:
            os.sync()
            started = time.monotonic()
            result = materialize(
                assets=list(defs.assets or []),
                selection=[key],
                partition_key=utc_today(),
                instance=instance,
                resources=defs.resources,
                run_config={"ops": {op_name: {"config": {"kind": "full"}}}},
            )
            seconds = time.monotonic() - started
            assert result.success
            metadata = result.asset_materializations_for_node(op_name)[0].metadata
            events = {event.event_type_value: event for event in result.all_events}
            return {
                "dagster": seconds,
                "step": events["STEP_SUCCESS"].event_specific_data.duration_ms / 1000,
                "verify": float(metadata["verify_seconds"].value),
            }

    runs = []
    for turn in range(repeat):
        engine.run("expire", REPO1_RETENTION_FULL="1")
        if turn % 2:  # alternate which goes first
            run = through_dagster()
            run["bare"] = timed(lambda: engine.run("backup", "--type=full"))
        else:
            bare = timed(lambda: engine.run("backup", "--type=full"))
            run = {"bare": bare, **through_dagster()}
        run["repository_gib"] = sum(b.repository_bytes for b in engine.info().backups) / 2**30
        runs.append(run)
    return medians(runs)


def restore_figures(cluster: LocalCluster, config: Path, repeat: int) -> dict[str, float]:
    """Bare restore + start and the PITR restore test, alternately, `repeat` times; medians."""
    settings = BackupSettings(config_path=str(config))
    engine, source = settings.server_engine(SERVER), settings.server_connection(SERVER)
    place = settings.scratch_place(SERVER)
    runs = []
    for _ in range(repeat):
        markers = write_markers(source, f"bare {time.time()}")
        wait_until_archived(SERVER, source, markers.wal)
        os.sync()
        bare_restore, bare_total, bare_removal = bare_restore_and_start(cluster, engine, markers)
        os.sync()
        report = run_pitr_restore_test(engine, source, place)
        assert not report.problems(), report.problems()
        runs.append(
            {
                # What the goal compares: restore + start + promotion + validation + removal
                # (the markers and the wait for their WAL are set-up, as the bare target's are).
                "test": report.total_seconds + report.removal_seconds,
                "test_rto": report.total_seconds,
                "test_restore": report.restore_seconds,
                "test_removal": report.removal_seconds,
                "bare_restore": bare_restore,
                "bare_total": bare_total,
                "bare_removal": bare_removal,
                "wal_replayed_mib": report.wal_replayed_bytes / 2**20,
            }
        )
    return medians(runs)


def bare_restore_and_start(
    cluster: LocalCluster, engine, markers: MarkerPair
) -> tuple[float, float, float]:
    """pgbackrest restore + pg_ctl start, polled until promoted: what an operator runs.
    Returns the restore's seconds, the seconds until promoted, and those of stopping and
    deleting it (pg_ctl stop -m immediate, rm) as the test does."""
    holder = Path(tempfile.mkdtemp(prefix="bench-bare-restore-"))
    shutil.chown(holder, "postgres", "postgres")
    target, port = holder / "data", free_port()
    env = engine.environment(PG1_PATH=str(target))
    as_postgres = ["runuser", "-u", "postgres", "--"]
    pg_ctl = [*as_postgres, str(cluster.bin_dir / "pg_ctl"), "-D", str(target)]
    try:
        started = time.monotonic()
        subprocess.run(
            [
                *as_postgres,
                "pgbackrest",
                "restore",
                "--type=time",
                "--target-action=promote",
                f"--target={target_time(markers.target).value}",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        restored = time.monotonic() - started
        subprocess.run(
            [
                *pg_ctl,
                "-l",
                str(holder / "log"),
                "-o",
                f"-p {port} -k {holder} -c listen_addresses='' -c archive_mode=off",
                "-w",
                "start",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        url = f"postgresql://postgres:{PASSWORD}@/postgres?host={holder}&port={port}"
        while True:
            with psycopg.connect(url, autocommit=True) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    break
            time.sleep(0.1)
        promoted = time.monotonic() - started
    finally:
        removal_started = time.monotonic()
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(holder, ignore_errors=True)
    return restored, promoted, time.monotonic() - removal_started


def lag_figures(cluster: LocalCluster, seconds: int) -> dict[str, float]:
    source = Connection.from_url(SERVER, cluster.url())
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(archiver_status(source).lag_seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    subprocess.run(
        [
            str(cluster.bin_dir / "pgbench"),
            "-T",
            str(seconds),
            "-c",
            "4",
            "-j",
            "2",
            "-n",
            cluster.url("pgbench"),
        ],
        check=True,
        capture_output=True,
    )
    stop.set()
    sampler.join()
    ordered = sorted(samples)
    return {
        "samples": len(samples),
        "median": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=150)
    parser.add_argument("--load-seconds", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed pair")
    parser.add_argument("--home", type=Path, default=Path("/var/tmp/backup-pipelines-bench-pitr"))
    options = parser.parse_args()
    cluster, config = prepare(options.home, options.scale)
    try:
        with psycopg.connect(cluster.url("pgbench")) as conn:
            size = conn.execute("SELECT pg_database_size('pgbench')").fetchone()[0]
        print(f"pgbench scale {options.scale}: {size / 2**30:.2f} GiB")
        backup = backup_figures(config, options.repeat)
        bare = backup["bare"]
        print(
            f"full base backup (medians of {options.repeat}): bare pgbackrest {bare:.1f} s, "
            f"through Dagster {backup['dagster']:.1f} s -> {backup['dagster'] / bare:.2f}x "
            f"(goal <= 1.10x); the step {backup['step']:.1f} s (the rest is the run's start and "
            f"end), of which pgbackrest verify (every file of the "
            f"{backup['repository_gib']:.2f} GiB repository) {backup['verify']:.1f} s; without "
            f"verify: the step {(backup['step'] - backup['verify']) / bare:.2f}x, the run "
            f"{(backup['dagster'] - backup['verify']) / bare:.2f}x the bare backup"
        )
        restore = restore_figures(cluster, config, options.repeat)
        bare_total = restore["bare_total"]
        print(
            f"PITR restore test (medians of {options.repeat}): restore to removal "
            f"{restore['test']:.1f} s = RTO {restore['test_rto']:.1f} s (pgbackrest restore "
            f"{restore['test_restore']:.1f} s, {restore['wal_replayed_mib']:.0f} MiB WAL "
            f"replayed) + removal {restore['test_removal']:.1f} s; bare restore + start + "
            f"promotion {bare_total:.1f} s (restore {restore['bare_restore']:.1f} s) -> "
            f"{restore['test'] / bare_total:.2f}x (goal <= 1.20x), RTO alone "
            f"{restore['test_rto'] / bare_total:.2f}x; with the bare copy's own removal "
            f"({restore['bare_removal']:.1f} s) on both sides "
            f"{restore['test'] / (bare_total + restore['bare_removal']):.2f}x"
        )
        lag = lag_figures(cluster, options.load_seconds)
        print(
            f"archive lag under pgbench -T {options.load_seconds} -c 4 ({lag['samples']:.0f} "
            f"samples): median {lag['median']:.1f} s, p95 {lag['p95']:.1f} s, max "
            f"{lag['max']:.1f} s (goal: p95 < 60 s)"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
