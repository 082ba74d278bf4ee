"""The recovery runbook: parsed as HTML, and its hand-restore commands actually run."""

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest

from backup_pipelines_tests.support.clouds import azure_cloud
from backup_pipelines_tests.support.config import TEST_DATABASES, today
from backup_pipelines_tests.support.data import table_fingerprints
from backup_pipelines_tests.support.emulators import AZURITE_ACCOUNT_KEY
from backup_pipelines_tests.support.paths import AZURE_CLI
from backup_pipelines_tests.support.runbook_html import RunbookParser
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    materialize_runbook,
    metadata_number,
    run_backup,
    run_restore_test_job,
)


@dataclass
class HandRestoreStore:
    """The storage section, the command-line tool an operator downloads with, the runbook page
    read with the store's own client, and what the operator exports for the tool."""

    storage: dict
    tool: str
    runbook_page: Callable[[], str]
    environment: dict[str, str]
    tool_folder: Path | None = None


@pytest.fixture(params=["s3", "azure"])
def hand_restore_store(request, monkeypatch) -> HandRestoreStore:
    if request.param == "s3":
        endpoint, bucket = (request.getfixturevalue(name) for name in ("s3_endpoint", "bucket"))
        s3 = boto3.client("s3", endpoint_url=endpoint)
        return HandRestoreStore(
            storage={"s3": {"bucket": bucket, "endpoint_url": endpoint}},
            tool="aws s3 cp --endpoint-url",
            runbook_page=lambda: (
                s3.get_object(Bucket=bucket, Key="archive/recovery_runbook.html")["Body"]
                .read()
                .decode()
            ),
            environment={},
        )
    cloud = azure_cloud(request.getfixturevalue("azurite"), monkeypatch)
    return HandRestoreStore(
        storage=cloud.storage,
        tool="az storage blob download --blob-endpoint",
        runbook_page=lambda: cloud.download("pg/archive/recovery_runbook.html").decode(),
        # az's own variable for the account key (or AZURE_STORAGE_SAS_TOKEN, or --auth-mode login)
        environment={"AZURE_STORAGE_KEY": AZURITE_ACCOUNT_KEY},
        tool_folder=AZURE_CLI,
    )


def test_runbook_restores_by_hand(write_config, cluster, instance, hand_restore_store, tmp_path):
    config = write_config(storage=hand_restore_store.storage)
    defs = definitions_for(config)
    assert run_backup(defs, instance).success
    tested = run_restore_test_job(defs, instance, databases=["agentic"])
    assert tested.success, failure_messages(tested)
    result = materialize_runbook(defs, instance)
    metadata = result.asset_materializations_for_node("recovery_runbook")[0].metadata
    assert metadata_number(metadata["databases_with_verified_archive"]) == len(TEST_DATABASES)
    assert metadata["restore_tested"].value == "agentic"
    assert metadata["databases_without_verified_archive"].value == "none"

    page = hand_restore_store.runbook_page()
    parser = RunbookParser()
    parser.feed(page)
    assert parser.external == []  # self-contained: no outside scripts, stylesheets, images, fonts
    assert "Every database has a verified archive" in page
    assert "passed</span> on" in page  # agentic's restore test, with its duration
    assert "never restore-tested" in page  # langfuse's

    commands = parser.blocks[("hand-restore", "langfuse")]
    assert hand_restore_store.tool in commands and "sha256sum --check" in commands
    for variable in hand_restore_store.environment:  # the page tells what the operator exports
        assert f"<code>{variable}</code>" in page
    assert "restore_from_archive:" in parser.blocks[("restore-job", "langfuse")]
    workdir = tmp_path / "by_hand"
    workdir.mkdir()
    env = {
        **os.environ,
        "PATH": ":".join(
            str(folder)
            for folder in (hand_restore_store.tool_folder, Path(sys.executable).parent)
            if folder
        )
        + f":{os.environ['PATH']}",
        **hand_restore_store.environment,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(cluster.port),
        "PGUSER": "postgres",
        "PGPASSWORD": cluster.superuser_password,
        "TARGET_DB": "langfuse_by_hand",
    }
    try:
        subprocess.run(["bash", "-c", commands], cwd=workdir, env=env, check=True)
        assert table_fingerprints(cluster.url("langfuse_by_hand")) == table_fingerprints(
            cluster.url("langfuse")
        )
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS langfuse_by_hand")


def test_runbook_commands_stop_on_a_damaged_download(write_config, instance, tmp_path):
    config = write_config()
    defs = definitions_for(config)
    assert run_backup(defs, instance, databases=("agentic",)).success
    materialize_runbook(defs, instance)
    page = (config.parent / "backups" / "archive" / "recovery_runbook.html").read_text()
    parser = RunbookParser()
    parser.feed(page)
    assert "No verified archive for: langfuse" in page

    (archive,) = (config.parent / "backups" / "archive" / "agentic" / today()).glob("*.zst")
    data = bytearray(archive.read_bytes())
    data[-100] ^= 0xFF
    archive.write_bytes(bytes(data))
    finished = subprocess.run(
        ["bash", "-c", parser.blocks[("hand-restore", "agentic")]],
        cwd=tmp_path,
        env={**os.environ, "TARGET_DB": "never_created"},
        capture_output=True,
        text=True,
    )
    assert finished.returncode != 0
    assert "FAILED" in finished.stdout + finished.stderr  # sha256sum --check, before createdb
