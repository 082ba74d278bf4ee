"""The recovery runbook: parsed as HTML, and its hand-restore commands actually run."""

import os
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg

from backup_pipelines_tests.helpers import (
    TEST_DATABASES,
    RunbookParser,
    definitions_for,
    failure_messages,
    materialize_runbook,
    metadata_number,
    run_backup,
    run_restore_test_job,
    table_fingerprints,
    today,
)


def test_runbook_restores_by_hand_from_s3(
    write_config, cluster, instance, s3_endpoint, bucket, tmp_path
):
    config = write_config(storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}})
    defs = definitions_for(config)
    assert run_backup(defs, instance).success
    tested = run_restore_test_job(defs, instance, databases=["agentic"])
    assert tested.success, failure_messages(tested)
    result = materialize_runbook(defs, instance)
    metadata = result.asset_materializations_for_node("recovery_runbook")[0].metadata
    assert metadata_number(metadata["databases_with_verified_archive"]) == len(TEST_DATABASES)
    assert metadata["restore_tested"].value == "agentic"
    assert metadata["databases_without_verified_archive"].value == "none"

    page = (
        boto3.client("s3", endpoint_url=s3_endpoint)
        .get_object(Bucket=bucket, Key="archive/recovery_runbook.html")["Body"]
        .read()
        .decode()
    )
    parser = RunbookParser()
    parser.feed(page)
    assert parser.external == []  # self-contained: no scripts, stylesheets, images or fonts
    assert "Every database has a verified archive" in page
    assert "passed</span> on" in page  # agentic's restore test, with its duration
    assert "never restore-tested" in page  # langfuse's

    commands = parser.blocks[("hand-restore", "langfuse")]
    assert "aws s3 cp --endpoint-url" in commands and "sha256sum --check" in commands
    assert "restore_from_archive:" in parser.blocks[("restore-job", "langfuse")]
    workdir = tmp_path / "by_hand"
    workdir.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
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
