"""Shared fixtures: a real PostgreSQL server per session, real S3 (moto), Azure (Azurite) and GCS
(gcp-storage-emulator) endpoints over HTTP.
Helpers that tests import by name are in support/, one module per concern."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from dagster import DagsterInstance, instance_for_test
from moto.server import ThreadedMotoServer

from backup_pipelines_demo.cluster import LocalCluster, free_port, start_cluster
from backup_pipelines_demo.sample_databases import (
    create_backup_role,
    create_restore_test_role,
    create_sample_database,
)
from backup_pipelines_tests.support.certificates import make_certificates
from backup_pipelines_tests.support.clouds import Cloud, azure_cloud, gcs_cloud
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    NO_SERVER,
    RESTORE_TEST_PASSWORD,
    TEST_DATABASES,
    Server,
    config_document,
)
from backup_pipelines_tests.support.emulators import running_azurite, running_gcs_emulator
from backup_pipelines_tests.support.paths import DOCKER

# The modules that take longest (minutes on a 2-core machine, measured December 2026) start
# first; the others follow in collection order and the fast tier fills the gaps at the end.
LONGEST_FIRST = (
    "browser/test_ui.py",
    "integration/test_remote_trigger.py",
    "integration/test_pitr.py",
    "integration/test_installed_package.py",
    "integration/test_retention_prune.py",
    "integration/test_bucket_snapshots.py",
    "integration/test_secrets_sweep.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0].removeprefix("backup_pipelines_tests/")
        if module in LONGEST_FIRST:
            return LONGEST_FIRST.index(module)
        return len(LONGEST_FIRST) + (1 if module.startswith("fast/") else 0)

    items.sort(key=rank)


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


def _config_writer(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    monkeypatch.setenv("TEST_BACKUP_PASSWORD", BACKUP_PASSWORD)
    monkeypatch.setenv("TEST_RESTORE_PASSWORD", RESTORE_TEST_PASSWORD)

    def write(storage: dict | None = None, databases: dict | None = None, **extra) -> Path:
        path = tmp_path / "backup_pipelines.yaml"
        path.write_text(yaml.safe_dump(config_document(server, storage, databases, **extra)))
        monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(path))
        return path

    return write


@pytest.fixture
def write_config(
    tmp_path: Path, cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Write a configuration file for the session's server; returns its path."""
    return _config_writer(tmp_path, cluster, monkeypatch)


@pytest.fixture
def write_offline_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a configuration file whose databases point at no server: for tests of the
    definitions, schedules and configuration, which connect to nothing."""
    return _config_writer(tmp_path, NO_SERVER, monkeypatch)


def compose_tls_terminator(port: int, certificates: Path, s3_endpoint: str) -> str:
    """docker/minio-tls.conf (compose's HTTPS in front of MinIO) listening on 127.0.0.1:`port`
    in front of `s3_endpoint`: the tests run the file compose runs."""
    text = (DOCKER / "minio-tls.conf").read_text()
    for old, new in [
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("/certs/s3.crt", str(certificates / "s3.crt")),
        ("/certs/s3.key", str(certificates / "s3.key")),
        ("http://minio:9000", s3_endpoint),
    ]:
        assert text.count(old) == 1, f"docker/minio-tls.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="session")
def https_s3_endpoint(s3_endpoint: str) -> Iterator[tuple[str, Path]]:
    """moto behind an nginx TLS terminator (pgBackRest speaks HTTPS only): `host:port` and the
    CA file that verifies its certificate."""
    home = Path(tempfile.mkdtemp(prefix="backup-pipelines-tls-"))
    home.chmod(0o755)
    certificates = make_certificates(home / "certs")
    port = free_port()
    (home / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {home}/body;
  proxy_temp_path {home}/proxy;
  {compose_tls_terminator(port, certificates, s3_endpoint)}
}}
"""
    )
    nginx = subprocess.Popen(
        [
            "nginx",
            "-c",
            str(home / "nginx.conf"),
            "-g",
            "daemon off;",
            "-e",
            str(home / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if nginx.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not start: {(home / 'error.log').read_text()}")
        time.sleep(0.1)
    yield f"127.0.0.1:{port}", certificates / "ca.crt"
    nginx.terminate()
    nginx.wait(timeout=10)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Azurite's blob service (npm `azurite`): the connection string of its account."""
    with running_azurite() as connection_string:
        yield connection_string


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator over HTTP; google-cloud-storage finds it via STORAGE_EMULATOR_HOST
    (the client's own switch, which also makes it send no credentials)."""
    with running_gcs_emulator() as endpoint:
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        yield endpoint


@pytest.fixture(params=["azure", "gcs"])
def cloud(request, monkeypatch) -> Cloud:
    if request.param == "azure":
        return azure_cloud(request.getfixturevalue("azurite"), monkeypatch)
    return gcs_cloud(request.getfixturevalue("gcs_emulator"))
