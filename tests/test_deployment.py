"""The production files load with Dagster's own loaders: the instance against a real
PostgreSQL, the workspaces through `dagster definitions validate` (the gRPC one against a real
user-code server)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from conftest import definitions_for, failure_messages, run_backup
from dagster import DagsterInstance

from backup_pipelines.demo.cluster import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DAGSTER = [sys.executable, "-m", "dagster"]


@pytest.fixture
def production_instance(cluster, monkeypatch):
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS dagster_storage")
        admin.execute("CREATE DATABASE dagster_storage")
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(cluster.port),
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": cluster.superuser_password,
        "DAGSTER_PG_DB": "dagster_storage",
    }.items():
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.from_config(str(DEPLOY))
    yield instance
    instance.dispose()


def test_production_instance_runs_a_backup_on_postgres(production_instance, write_config):
    instance = production_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_runtime_seconds == 21600
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 8
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 2

    result = run_backup(definitions_for(write_config()), instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    assert instance.get_run_by_id(result.run_id) is not None  # stored in PostgreSQL


def validate(workspace: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DAGSTER, "definitions", "validate", "-w", str(workspace)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_workspaces_load(write_config):
    config = write_config()
    env = {**os.environ, "BACKUP_PIPELINES_CONFIG": str(config)}
    done = validate(DEPLOY / "workspace.yaml", env)
    assert done.returncode == 0, done.stderr[-2000:]

    port = free_port()
    server = subprocess.Popen(
        [
            *DAGSTER,
            "api",
            "grpc",
            "-m",
            "backup_pipelines.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(
            [*DAGSTER, "api", "grpc-health-check", "-p", str(port)], capture_output=True
        ).returncode:
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(1)
        grpc_env = {
            **env,
            "BACKUP_PIPELINES_CODE_HOST": "127.0.0.1",
            "BACKUP_PIPELINES_CODE_PORT": str(port),
        }
        done = validate(DEPLOY / "workspace.grpc.yaml", grpc_env)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
