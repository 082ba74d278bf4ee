"""A database of many small tables against a bare `pg_dump -Fc` of it, in one run:

    .venv/bin/python -m benchmarks.many_tables --tables 20000

1. the dump step alone (dump_step.py: pg_dump, the row counter, zstd, the manifest), and for
   comparison what exact counts by count(*) cost (one per table inside one repeatable-read
   snapshot, as the dump step did before it counted rows in the stream);
2. the whole `daily_backup` job (`dg launch`, a fresh process and its step process: dump,
   archive and verification in one), with the peak RSS of every process.

The database (5 rows a table, every 10th empty) is built once in --home and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml

from backup_pipelines import names
from backup_pipelines.core.common.layout import manifest_key
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.postgres.catalog import exported_snapshot
from backup_pipelines.core.postgres.dump import utc_today
from backup_pipelines_demo.cluster import LocalCluster, start_cluster
from benchmarks.backup_throughput import measure

PASSWORD = "bench-superuser-password"
DATABASE = "many_tables"
TABLES_PER_TRANSACTION = 1000


def prepare(home: Path, tables: int) -> LocalCluster:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    cluster = start_cluster(home / "server", PASSWORD)
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        locks = int(admin.execute("SHOW max_locks_per_transaction").fetchone()[0])
        if locks < 1024:  # one snapshot (pg_dump's, the counts') locks every table
            admin.execute("ALTER SYSTEM SET max_locks_per_transaction = 1024")
            cluster.stop()
            cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone():
            return cluster
        print(f"building {tables} tables (once; reused from {home})")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(cluster.url(DATABASE), autocommit=True) as conn:
        for first in range(1, tables + 1, TABLES_PER_TRANSACTION):
            last = min(first + TABLES_PER_TRANSACTION - 1, tables)
            conn.execute(
                f"""DO $$ BEGIN FOR i IN {first}..{last} LOOP
                  EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i);
                  IF i % 10 <> 0 THEN
                    EXECUTE format(
                      'INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, 5) g', i);
                  END IF;
                END LOOP; END $$"""
            )
    return cluster


def counted_in_snapshot(cluster: LocalCluster) -> tuple[float, int]:
    """Seconds to count every dumped relation with count(*) in one exported snapshot, as the
    dump step did before it counted rows in the stream, and the rows counted."""
    connection = Connection.from_url(DATABASE, cluster.url(DATABASE))
    with exported_snapshot(connection) as snapshot:
        relations = [(schema, name) for _, schema, name, _ in snapshot.data_relations()]
        started = time.monotonic()
        rows = sum(snapshot.count_rows(relations))
        return time.monotonic() - started, rows


INSTANCES = ("sqlite", "postgres")  # Dagster's default local storage; the deployment's
INSTANCE_DATABASE = "dagster_instance"


def project_env(
    cluster: LocalCluster,
    home: Path,
    databases: tuple[str, ...] = (DATABASE,),
    instance: str = "sqlite",
) -> dict[str, str]:
    """A configuration backing up the databases into a fresh local store, and its environment;
    the Dagster instance keeps runs and events in SQLite files or, as the deployment's
    dagster.yaml does, in PostgreSQL (a database on the benchmark's server)."""
    store, dagster_home = home / "store", home / "dagster_home"
    shutil.rmtree(store, ignore_errors=True)
    dagster_home.mkdir(exist_ok=True)
    write_instance_yaml(cluster, dagster_home, instance)
    config = home / "backup_pipelines.yaml"
    urls = {
        name: {"url": f"postgresql://postgres:${{BENCH_PW}}@127.0.0.1:{cluster.port}/{name}"}
        for name in databases
    }
    document = {"storage": {"local": {"path": str(store)}}, "databases": urls}
    config.write_text(yaml.safe_dump(document))
    return {
        **os.environ,
        "BENCH_PW": PASSWORD,
        "BACKUP_PIPELINES_CONFIG": str(config),
        "DAGSTER_HOME": str(dagster_home),
    }


def write_instance_yaml(cluster: LocalCluster, dagster_home: Path, instance: str) -> None:
    instance_yaml = dagster_home / "dagster.yaml"
    if instance == "sqlite":
        instance_yaml.unlink(missing_ok=True)
        return
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (INSTANCE_DATABASE,))
        if not found.fetchone():
            admin.execute(f"CREATE DATABASE {INSTANCE_DATABASE}")
    server = {
        "hostname": "127.0.0.1",
        "port": cluster.port,
        "username": "postgres",
        "password": {"env": "BENCH_PW"},
        "db_name": INSTANCE_DATABASE,
    }
    instance_yaml.write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": server}}}))


def dump_step(cluster: LocalCluster, home: Path) -> tuple[float, float]:
    """The dump step as a fresh process: its seconds, and those of the dump itself (the
    manifest's dump_seconds: snapshot, pg_dump, row counter, zstd, the object committed)."""
    script = str(Path(__file__).with_name("dump_step.py"))
    seconds, _ = measure([sys.executable, script, DATABASE], project_env(cluster, home))
    manifest = home / "store" / "dumps" / manifest_key(DATABASE, utc_today())
    return seconds, float(json.loads(manifest.read_text())["dump_seconds"])


def whole_job(
    cluster: LocalCluster,
    home: Path,
    databases: tuple[str, ...] = (DATABASE,),
    instance: str = "sqlite",
) -> tuple[float, dict[str, int]]:
    """`daily_backup` for today, as `dg launch` runs it: seconds and peak RSS by program."""
    env = project_env(cluster, home, databases, instance)
    dg = str(Path(sys.executable).parent / "dg")
    launch = ["launch", "--job", names.DAILY_BACKUP_JOB, "--partition", utc_today()]
    return measure([dg, *launch, "-m", "backup_pipelines.definitions"], env)


def bare_pg_dump(cluster: LocalCluster, database: str = DATABASE) -> float:
    assert cluster.bin_dir is not None
    started = time.monotonic()
    server = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]
    subprocess.run(
        [str(cluster.bin_dir / "pg_dump"), "-Fc", *server, database],
        env={**os.environ, "PGPASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--home", type=Path, default=Path("/var/tmp/backup-pipelines-bench-many-tables")
    )
    options = parser.parse_args()
    cluster = prepare(options.home, options.tables)
    try:
        counts, dumps, steps, inside, rows = [], [], [], [], 0
        for _ in range(options.repeat):
            seconds, rows = counted_in_snapshot(cluster)
            counts.append(seconds)
            dumps.append(bare_pg_dump(cluster))
            step, dump = dump_step(cluster, options.home)
            steps.append(step)
            inside.append(dump)
        count_s, dump_s = statistics.median(counts), statistics.median(dumps)
        step_s, inside_s = statistics.median(steps), statistics.median(inside)
        print(
            f"{options.tables} tables, {rows} rows (medians of {options.repeat}): bare pg_dump "
            f"-Fc {dump_s:.2f} s; the dump (snapshot to committed object, rows counted in the "
            f"stream) {inside_s:.2f} s = {inside_s / dump_s:.2f}x, as a fresh process "
            f"{step_s:.2f} s = {step_s / dump_s:.2f}x; exact counts by count(*) in one "
            f"snapshot, for comparison, {count_s:.2f} s = {count_s / dump_s:.2f}x"
        )
        job_s, peaks = whole_job(cluster, options.home)
        memory = ", ".join(f"{name} {rss / 2**20:.0f} MiB" for name, rss in sorted(peaks.items()))
        print(
            f"daily_backup job (dg launch, one run) {job_s:.1f} s = {job_s / dump_s:.2f}x bare "
            f"pg_dump -Fc; peak RSS by process: {memory}"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
