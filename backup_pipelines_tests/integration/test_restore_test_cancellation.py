"""A restore test's throw-away database is gone after a cancelled run, and after a crash the
next restore test drops it. The run is a real `dagster asset materialize` in its own process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from backup_pipelines_tests.support.config import today
from backup_pipelines_tests.support.data import restore_test_databases
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    run_backup,
    run_restore_test_job,
)

SLOW_ASSERTION = {"name": "slow", "sql": "SELECT pg_sleep(60) IS NOT NULL", "expect": True}


@pytest.fixture
def slow_config(write_config, cluster, instance) -> Path:
    config = write_config()
    document = yaml.safe_load(config.read_text())
    document["databases"]["agentic"]["restore_assertions"] = [SLOW_ASSERTION]
    config.write_text(yaml.safe_dump(document))
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    return config


def start_restore_test(config: Path, tmp_path: Path) -> subprocess.Popen:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).parent / "dagster"
    return subprocess.Popen(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "backup_pipelines.definitions",
            "--select",
            "postgres/agentic/restore_test",
            "--partition",
            today(),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home), "BACKUP_PIPELINES_CONFIG": str(config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for_validation(cluster, process: subprocess.Popen) -> str:
    """The throw-away database's name, once the slow assertion runs inside it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        with psycopg.connect(cluster.url()) as conn:
            row = conn.execute(
                "SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
            ).fetchone()
        if row:
            return row[0]
        time.sleep(0.5)
    raise AssertionError("the restore test never reached its validation")


def test_cancelled_restore_test_drops_its_database(slow_config, cluster, tmp_path):
    process = start_restore_test(slow_config, tmp_path)
    try:
        temp = wait_for_validation(cluster, process)
        assert temp in restore_test_databases(cluster)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C or a run termination delivers
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    assert restore_test_databases(cluster) == []


def test_next_restore_test_drops_the_database_of_a_crashed_one(
    slow_config, cluster, tmp_path, instance
):
    process = start_restore_test(slow_config, tmp_path)
    temp = wait_for_validation(cluster, process)
    os.killpg(process.pid, signal.SIGKILL)  # nothing of the run can clean up
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server notices the dead sessions
        with psycopg.connect(cluster.url()) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s", [temp]
            ).fetchone():
                break
        time.sleep(0.5)
    assert restore_test_databases(cluster) == [temp]

    document = yaml.safe_load(slow_config.read_text())
    del document["databases"]["agentic"]["restore_assertions"]
    slow_config.write_text(yaml.safe_dump(document))
    result = run_restore_test_job(definitions_for(slow_config), instance, databases=["agentic"])
    assert result.success, failure_messages(result)
    assert restore_test_databases(cluster) == []
