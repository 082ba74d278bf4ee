"""Shared fixtures: a real PostgreSQL server per session, a real S3 endpoint (moto over HTTP)."""

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)
from moto.server import ThreadedMotoServer
from psycopg import sql

from backup_pipelines.config import load_config
from backup_pipelines.definitions import build_definitions
from backup_pipelines.demo.cluster import LocalCluster, start_cluster
from backup_pipelines.demo.sample_databases import (
    create_backup_role,
    create_restore_test_role,
    create_sample_database,
)

# Distinctive, so a test can search every log line and event for it.
BACKUP_PASSWORD = "Pw-7qZ1x-never-print-me"
RESTORE_TEST_PASSWORD = "Rt-4kP9w-never-print-me"
TEST_DATABASES = ("agentic", "langfuse")


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="backup-pipelines-test-pg-")) / "cluster"
    root.parent.chmod(0o755)
    server = start_cluster(root, password=uuid.uuid4().hex)
    try:
        for database in TEST_DATABASES:
            create_sample_database(server.url(), database, scale=0.2)
        create_backup_role(server.url(), BACKUP_PASSWORD)
        create_restore_test_role(server.url(), RESTORE_TEST_PASSWORD)
        yield server
    finally:
        server.destroy()
        shutil.rmtree(root.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"backups-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def yesterday() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def backup_url(cluster: LocalCluster, database: str) -> str:
    return cluster.url(database, user="backup", password="${TEST_BACKUP_PASSWORD}")


def scratch_url(cluster: LocalCluster) -> str:
    return cluster.url("postgres", user="restore_tester", password="${TEST_RESTORE_PASSWORD}")


@pytest.fixture
def write_config(
    tmp_path: Path, cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Write a configuration file for the session's server; returns its path."""
    monkeypatch.setenv("TEST_BACKUP_PASSWORD", BACKUP_PASSWORD)
    monkeypatch.setenv("TEST_RESTORE_PASSWORD", RESTORE_TEST_PASSWORD)

    def write(storage: dict | None = None, databases: dict | None = None, **extra) -> Path:
        path = tmp_path / "backup_pipelines.yaml"
        document = {
            "storage": storage or {"local": {"path": "./backups"}},
            "databases": databases
            or {name: {"url": backup_url(cluster, name)} for name in TEST_DATABASES},
            **extra,
            "restore_test": {"url": scratch_url(cluster), **extra.get("restore_test", {})},
        }
        path.write_text(yaml.safe_dump(document))
        monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(path))
        return path

    return write


def definitions_for(config_path: Path) -> Definitions:
    return build_definitions(load_config(config_path), str(config_path))


def run_backup(
    defs: Definitions,
    instance: DagsterInstance,
    day: str | None = None,
    steps: tuple[str, ...] = ("dump", "archive", "verification"),
    databases: tuple[str, ...] = TEST_DATABASES,
) -> ExecuteInProcessResult:
    """Materialize the chosen steps of the chosen databases for one day, as the UI would."""
    return materialize(
        assets=list(defs.assets or []),
        selection=[AssetKey(["postgres", db, step]) for db in databases for step in steps],
        partition_key=day or today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def failure_messages(result: ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    )


def table_fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """Every user table's row count and a hash of all its rows, in a stable order."""
    fingerprints = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                "FROM {}.{} t"
            ).format(sql.Identifier(schema), sql.Identifier(table))
            fingerprints[f"{schema}.{table}"] = tuple(conn.execute(query).fetchone())
    return fingerprints


def restore_into_new_database(cluster: LocalCluster, archive: Path, name: str) -> str:
    """Restore an archive file by hand, as the README tells an operator to."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {
        **os.environ,
        "PGPASSWORD": cluster.superuser_password,
        "TARGET": cluster.url(name, password=""),
    }
    subprocess.run(
        f"zstd -dc '{archive}' | pg_restore --no-owner --exit-on-error -d \"$TARGET\"",
        shell=True,
        check=True,
        env=env,
    )
    return cluster.url(name)


def serve_definitions(program: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    """A Dagster server process (webserver, gRPC code server) for this project's definitions
    on 127.0.0.1:`port`, output discarded."""
    return subprocess.Popen(
        [*program, "-m", "backup_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
