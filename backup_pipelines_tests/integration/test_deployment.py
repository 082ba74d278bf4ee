"""The production files load with Dagster's own loaders: the instance against a real
PostgreSQL, the workspaces through `dagster definitions validate` (the gRPC one against a real
user-code server)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from dagster import DagsterInstance

from backup_pipelines_demo.cluster import free_port
from backup_pipelines_tests.support.paths import REPOSITORY
from backup_pipelines_tests.support.processes import (
    production_instance_env,
    serve_definitions,
    stop,
)
from backup_pipelines_tests.support.runs import definitions_for, failure_messages, run_backup

DAGSTER = [sys.executable, "-m", "dagster"]


@pytest.fixture
def production_env(cluster, s3_endpoint, bucket, monkeypatch) -> str:
    """The variables dagster.yaml reads, for a fresh database; returns the compute-log bucket."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS dagster_storage")
        admin.execute("CREATE DATABASE dagster_storage")
    for name, value in production_instance_env(
        cluster, "dagster_storage", s3_endpoint, bucket
    ).items():
        monkeypatch.setenv(name, value)
    return bucket


@pytest.fixture
def production_instance(production_env, tmp_path):
    # The instance home is a temp folder: Dagster writes compute logs under it.
    shutil.copy(REPOSITORY / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    yield instance
    instance.dispose()


def test_production_instance_runs_a_backup_on_postgres(
    production_instance, production_env, s3_endpoint, write_config
):
    instance = production_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
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
    # The steps' captured output went to the compute-log bucket, not into DAGSTER_HOME.
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=production_env, Prefix=f"dagster/compute-logs/storage/{result.run_id}/"
    )
    assert any(obj["Key"].endswith(".err") for obj in listed.get("Contents", [])), listed


def validate(workspace: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DAGSTER, "definitions", "validate", "-w", str(workspace)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_workspaces_load(write_config, tmp_path):
    config = write_config()
    # An instance of its own: without DAGSTER_HOME, Dagster would read the production
    # dagster.yaml in the working directory.
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "BACKUP_PIPELINES_CONFIG": str(config), "DAGSTER_HOME": str(home)}
    done = validate(REPOSITORY / "workspace.yaml", env)
    assert done.returncode == 0, done.stderr[-2000:]

    port = free_port()
    server = serve_definitions([*DAGSTER, "api", "grpc"], port, env)
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
        done = validate(REPOSITORY / "docker" / "workspace.grpc.yaml", grpc_env)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        stop(server)


def instance_with(snippet: str, home: Path, **overrides) -> DagsterInstance:
    """dagster.yaml with a scale-out snippet (docs/scale-out/) added, loaded by Dagster."""
    config = yaml.safe_load((REPOSITORY / "dagster.yaml").read_text())
    added = yaml.safe_load((REPOSITORY / "docs" / "scale-out" / snippet).read_text())
    added["run_launcher"]["config"].update(overrides)
    (home / "dagster.yaml").write_text(yaml.safe_dump({**config, **added}))
    return DagsterInstance.from_config(str(home))


def assert_queue_and_pools_stay_central(instance: DagsterInstance) -> None:
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 8
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 2


def test_kubernetes_snippet_loads_a_k8s_run_launcher(production_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKUP_PIPELINES_IMAGE", "registry.example.com/backup_pipelines:1.0")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    # Outside a cluster: the snippet's in-cluster credentials replaced by a kubeconfig file.
    instance = instance_with(
        "kubernetes.yaml",
        tmp_path,
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
    )
    try:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "K8sRunLauncher"
        assert launcher.job_image == "registry.example.com/backup_pipelines:1.0"
        assert launcher.job_namespace == "backup-pipelines"
        assert "backup-pipelines-secrets" in launcher.env_secrets
        assert_queue_and_pools_stay_central(instance)
    finally:
        instance.dispose()


def test_ecs_snippet_loads_an_ecs_run_launcher(production_env, s3_endpoint, tmp_path, monkeypatch):
    # The launcher checks its task definition with ECS when it loads: moto's ECS answers.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    ecs = boto3.client("ecs", endpoint_url=s3_endpoint, region_name="eu-west-1")
    arn = ecs.register_task_definition(
        family="backup-pipelines-run",
        containerDefinitions=[{"name": "run", "image": "backup_pipelines:latest", "memory": 4096}],
    )["taskDefinition"]["taskDefinitionArn"]
    monkeypatch.setenv("BACKUP_PIPELINES_RUN_TASK_DEFINITION", arn)
    for name in ("BACKUP_PASSWORD", "RESTORE_TEST_PASSWORD", "DAGSTER_PG_PASSWORD"):
        secret = f"arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name.lower()}"
        monkeypatch.setenv(f"{name}_SECRET_ARN", secret)
    instance = instance_with("ecs.yaml", tmp_path)
    try:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "EcsRunLauncher"
        assert launcher.task_definition == arn
        assert {secret["name"] for secret in launcher.secrets} == {
            "BACKUP_PASSWORD",
            "RESTORE_TEST_PASSWORD",
            "DAGSTER_PG_PASSWORD",
        }
        assert_queue_and_pools_stay_central(instance)
    finally:
        instance.dispose()
