"""Dagster's own command lines load the project: `dagster` as the webserver and daemon would,
and `dg` as a Dagster user runs it (subprocesses, no PostgreSQL server)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from backup_pipelines_tests.support.paths import REPOSITORY


def test_dagster_cli_loads_the_definitions(write_offline_config):
    config = write_offline_config()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "backup_pipelines.definitions",
        ],
        capture_output=True,
        text=True,
        cwd=config.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_dg_checks_and_lists_the_project_definitions(write_offline_config, tmp_path):
    """`dg` works on the project ([tool.dg] in pyproject), reading BACKUP_PIPELINES_CONFIG."""
    config = write_offline_config()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "BACKUP_PIPELINES_CONFIG": str(config),
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
    }
    dg = str(Path(sys.executable).parent / "dg")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dg, *args], capture_output=True, text=True, cwd=REPOSITORY, env=env)

    checked = run("check", "defs")
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr
    listed = run("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assets = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert {"postgres/agentic/dump", "postgres/langfuse/verification"} <= assets
