"""Many small databases in one `daily_backup` run against bare `pg_dump -Fc` of each, in one run:

    .venv/bin/python -m benchmarks.small_databases --databases 20 --rows 40000

prints the seconds per database the job spends beyond the bare dumps (`dg launch`, a fresh
process and its step processes, one per database), with the Dagster instance on SQLite (Dagster's
local default) and on PostgreSQL (the deployment's dagster.yaml), and the peak RSS of every
process; and, for the floor, the same work (dump, checks, archive, verification) called in one
process without Dagster. The databases (one table of --rows rows each) are built once in --home
and reused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import psycopg

from backup_pipelines.core.postgres.dump import utc_today
from backup_pipelines.defs.postgres.assets import (
    archive_result,
    take_dump_result,
    verification_result,
)
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster, start_cluster
from benchmarks.many_tables import INSTANCES, PASSWORD, bare_pg_dump, project_env, whole_job


def prepare(home: Path, count: int, rows: int) -> tuple[LocalCluster, tuple[str, ...]]:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    cluster = start_cluster(home / "server", PASSWORD)
    names = tuple(f"tenant_{n:03d}" for n in range(1, count + 1))
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        existing = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
        for name in names:
            if name in existing:
                continue
            admin.execute(f"CREATE DATABASE {name}")
            with psycopg.connect(cluster.url(name), autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE events AS SELECT g AS id, now() AS at, md5(g::text) AS body "
                    f"FROM generate_series(1, {rows}) g"
                )
    return cluster, names


def chain_without_dagster(cluster: LocalCluster, home: Path, databases: tuple[str, ...]) -> float:
    """Seconds for each database's dump, dump_complete, archive and verification, called one
    after another in this process as the backup step calls them: the work, without Dagster."""
    env = project_env(cluster, home, databases)
    settings = BackupSettings(config_path=env["BACKUP_PIPELINES_CONFIG"])
    os.environ["BENCH_PW"] = env["BENCH_PW"]
    started, day = time.monotonic(), utc_today()
    for database in databases:
        take_dump_result(settings, database, day)
        archive_result(settings, database, day)
        verification_result(settings, database, day)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=20)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--home", type=Path, default=Path("/var/tmp/backup-pipelines-bench-small-databases")
    )
    options = parser.parse_args()
    cluster, names = prepare(options.home, options.databases, options.rows)
    try:
        bare, work, jobs, peaks = [], [], {i: [] for i in INSTANCES}, {}
        for _ in range(options.repeat):
            started = time.monotonic()
            for name in names:
                bare_pg_dump(cluster, name)
            bare.append(time.monotonic() - started)
            work.append(chain_without_dagster(cluster, options.home, names))
            for instance in INSTANCES:
                seconds, peaks[instance] = whole_job(cluster, options.home, names, instance)
                jobs[instance].append(seconds)
        bare_s = statistics.median(bare)
        print(
            f"{len(names)} databases of {options.rows} rows (medians of {options.repeat}): "
            f"bare pg_dump -Fc of each {bare_s:.1f} s"
        )
        work_s = statistics.median(work)
        print(
            f"  the chain's work without Dagster (one process, one database after another): "
            f"{work_s:.1f} s = {(work_s - bare_s) / len(names):.2f} s per database beyond the "
            "bare dumps"
        )
        for instance in INSTANCES:
            job_s = statistics.median(jobs[instance])
            memory = ", ".join(
                f"{name} {rss / 2**20:.0f} MiB" for name, rss in sorted(peaks[instance].items())
            )
            print(
                f"  daily_backup (dg launch), instance on {instance}: {job_s:.1f} s = "
                f"{(job_s - bare_s) / len(names):.2f} s per database beyond the bare dumps; "
                f"peak RSS by process: {memory}"
            )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
