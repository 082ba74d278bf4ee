"""The restore job (the day of the disaster): restores, refusals, and the audit record."""

import json

import psycopg
import pytest
from dagster import AssetKey, AssetRecordsFilter

from backup_pipelines_tests.support.config import BACKUP_PASSWORD, target_url, today
from backup_pipelines_tests.support.data import drop, table_fingerprints
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    run_backup,
    run_restore,
)


@pytest.fixture
def backed_up(write_config, instance, monkeypatch, cluster):
    monkeypatch.setenv("TEST_TARGET_PASSWORD", cluster.superuser_password)
    config = write_config()
    defs = definitions_for(config)
    result = run_backup(defs, instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    return defs


def audit_records(instance) -> list[dict]:
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=AssetKey(["postgres", "agentic", "archive"])), limit=10
    ).records
    return [
        {name: value.value for name, value in r.asset_observation.metadata.items()} for r in records
    ]


def test_restore_into_a_new_database_gives_identical_data(backed_up, cluster, instance):
    target = f"agentic_restored_{today().replace('-', '')}"
    try:
        result = run_restore(backed_up, instance, target_url=target_url(cluster))
        assert result.success, failure_messages(result)
        assert table_fingerprints(cluster.url(target)) == table_fingerprints(cluster.url("agentic"))
        (audit,) = audit_records(instance)
        assert audit["outcome"] == "restored"
        assert audit["target_database"] == target
        assert audit["triggered_by"].startswith("launched by hand")
        assert audit["source_archive"].endswith(".dump.zst")
        assert audit["mismatches"] == []
        assert cluster.superuser_password not in repr(audit)
    finally:
        drop(cluster, target)


def test_restore_over_an_existing_database_needs_confirmation(backed_up, cluster, instance):
    target = "agentic_copy"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {target}")
    try:
        url = target_url(cluster)
        result = run_restore(backed_up, instance, target_url=url, target_database=target)
        assert not result.success
        assert f"'{target}' already exists" in failure_messages(result)

        result = run_restore(
            backed_up, instance, target_url=url, target_database=target, replace_existing=True
        )
        assert not result.success
        assert f"to confirm, set confirm: {target}" in failure_messages(result)
        assert table_fingerprints(cluster.url(target)) == {}  # untouched

        result = run_restore(
            backed_up,
            instance,
            target_url=url,
            target_database=target,
            replace_existing=True,
            confirm=target,
        )
        assert result.success, failure_messages(result)
        assert table_fingerprints(cluster.url(target)) == table_fingerprints(cluster.url("agentic"))
        outcomes = [record["outcome"] for record in audit_records(instance)]
        assert outcomes[0] == "restored" and all("failed" in o for o in outcomes[1:])
    finally:
        drop(cluster, target)


def test_restore_refuses_unknown_database_day_and_literal_password(backed_up, cluster, instance):
    url = target_url(cluster)
    result = run_restore(backed_up, instance, database="nope", target_url=url)
    assert "unknown database 'nope'; configured databases: agentic, langfuse" in (
        failure_messages(result)
    )
    result = run_restore(backed_up, instance, partition="2026-01-02", target_url=url)
    assert "has no archive for 2026-01-02" in failure_messages(result)

    literal = cluster.url("postgres", password=BACKUP_PASSWORD)
    result = run_restore(backed_up, instance, target_url=literal)
    messages = failure_messages(result)
    assert "target_url holds a password" in messages
    assert BACKUP_PASSWORD not in messages


def test_restore_refuses_an_archive_failing_its_checksum(
    backed_up, write_config, cluster, instance
):
    config_dir = write_config().parent
    (archive,) = (config_dir / "backups" / "archive" / "agentic" / today()).glob("*.zst")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    target = "agentic_from_damaged"
    try:
        result = run_restore(
            backed_up, instance, target_url=target_url(cluster), target_database=target
        )
        assert not result.success
        assert "refusing to restore: the archive fails its checksum" in failure_messages(result)
        with psycopg.connect(cluster.url()) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target])
            assert exists.fetchone() is None
        assert "fails its checksum" in audit_records(instance)[0]["outcome"]
    finally:
        drop(cluster, target)


def test_restore_refuses_a_target_server_older_than_the_backup(
    backed_up, write_config, cluster, instance
):
    archive_dir = write_config().parent / "backups" / "archive" / "agentic" / today()
    manifest = json.loads((archive_dir / "manifest.json").read_text())
    manifest["server_version"] = "99.1"  # as if the backup came from a newer server
    (archive_dir / "manifest.json").write_text(json.dumps(manifest))
    result = run_restore(backed_up, instance, target_url=target_url(cluster))
    assert not result.success
    assert "runs PostgreSQL 15 but the backup came from PostgreSQL 99.1" in (
        failure_messages(result)
    )
