"""Shared fixtures: a real PostgreSQL server per session, a real S3 endpoint (moto over HTTP).
Helpers that tests import by name are in helpers.py."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from dagster import DagsterInstance, instance_for_test
from moto.server import ThreadedMotoServer

from backup_pipelines_demo.cluster import LocalCluster, start_cluster
from backup_pipelines_demo.sample_databases import (
    create_backup_role,
    create_restore_test_role,
    create_sample_database,
)
from backup_pipelines_tests.helpers import (
    BACKUP_PASSWORD,
    RESTORE_TEST_PASSWORD,
    TEST_DATABASES,
    config_document,
)


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


@pytest.fixture
def write_config(
    tmp_path: Path, cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Write a configuration file for the session's server; returns its path."""
    monkeypatch.setenv("TEST_BACKUP_PASSWORD", BACKUP_PASSWORD)
    monkeypatch.setenv("TEST_RESTORE_PASSWORD", RESTORE_TEST_PASSWORD)

    def write(storage: dict | None = None, databases: dict | None = None, **extra) -> Path:
        path = tmp_path / "backup_pipelines.yaml"
        path.write_text(yaml.safe_dump(config_document(cluster, storage, databases, **extra)))
        monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(path))
        return path

    return write
