"""A data export of one large table to CSV against a bare `psql \\copy … | zip`, in one run.

    .venv/bin/python -m benchmarks.export_csv --scale 20 --scale 150 [--repeat 3]

For each scale N it builds the pgbench database backup_throughput builds and exports its
biggest table, pgbench_accounts (100,000 rows per unit of scale), alternating, each in its own
process timed whole (interpreter start-up and imports included on both sides):

  bare     psql -c "\\copy (SELECT * FROM pgbench_accounts) TO STDOUT CSV HEADER" | zip -q - -
  export   take_export: one snapshot, the estimate, COPY streamed through Python's zipfile
           (deflate, the level zip uses) into a local store, schema.sql by pg_dump, the manifest
  readback the export's check alone: the ZIP read back, every row counted, every file hashed

and prints the medians, the ratios against bare, and the peak RSS of every process involved.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from backup_pipelines_demo.cluster import LocalCluster
from benchmarks.backup_throughput import (
    build_database,
    child_command,
    compare_alternating,
    scales_main,
)

TABLE = "pgbench_accounts"
BARE = "bare psql \\copy | zip"


def child(mode: str, url: str, folder: str) -> None:
    """The measured work in a fresh process: prints the seconds of the work alone."""
    from backup_pipelines.core.common.layout import export_key
    from backup_pipelines.core.common.postgres_client import Connection
    from backup_pipelines.core.postgres.export import (
        ExportLimits,
        read_export_manifest,
        take_export,
        verify_export,
    )
    from backup_pipelines.core.postgres.export_request import ExportRequest
    from backup_pipelines.storage import LocalStore

    connection = Connection.from_url("bench", url.replace("${PASSWORD}", os.environ["PASSWORD"]))
    store = LocalStore(Path(folder))
    started = time.perf_counter()
    if mode == "export":
        request = ExportRequest(database="bench", tables=[{"table": TABLE}])
        take_export(connection, store, request, "bench", ExportLimits(10**10, 1 << 40))
    else:
        problems = verify_export(store, read_export_manifest(store, export_key("bench", "bench")))
        if problems:
            raise SystemExit("; ".join(problems))
    print(time.perf_counter() - started)


def run_scale(cluster: LocalCluster, work: Path, scale: int, repeat: int) -> None:
    database = f"bench_s{scale}"
    print(f"\n== scale {scale}: building {database} ...", flush=True)
    assert cluster.bin_dir is not None
    build_database(cluster, cluster.bin_dir, database, scale)
    env = {**os.environ, "PGPASSWORD": cluster.superuser_password}
    env["PASSWORD"] = cluster.superuser_password
    url = cluster.url(database).replace(cluster.superuser_password, "${PASSWORD}")
    psql = str(cluster.bin_dir / "psql")
    bare_zip = work / "bare.zip"
    copy = f"\\copy (SELECT * FROM {TABLE}) TO STDOUT WITH (FORMAT csv, HEADER)"
    bare = (
        f"{psql} -X -q -h 127.0.0.1 -p {cluster.port} -U postgres -d {database} "
        f"-c '{copy}' | zip -q - - > {bare_zip}"
    )
    store = work / "store"
    argvs = {
        BARE: ["bash", "-o", "pipefail", "-c", bare],
        "export (take_export)": child_command("benchmarks.export_csv", "export", url, str(store)),
        "readback (the check)": child_command("benchmarks.export_csv", "readback", url, str(store)),
    }
    compare_alternating(argvs, env, work, repeat)
    exported = next(store.rglob("*.zip"))
    print(
        f"   {TABLE}: {100_000 * scale:,} rows; ZIP {exported.stat().st_size / 1e6:.0f} MB "
        f"(bare zip {bare_zip.stat().st_size / 1e6:.0f} MB)"
    )


def main() -> None:
    scales_main(__doc__, child, ("MODE", "URL", "FOLDER"), run_scale, "bench-export-")


if __name__ == "__main__":
    main()
