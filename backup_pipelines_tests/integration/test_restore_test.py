"""Restore tests: archives restored into throw-away databases on a real server and compared."""

import json
from pathlib import Path

import psycopg
import pytest
from dagster import AssetCheckKey, AssetKey, Definitions

from backup_pipelines import names
from backup_pipelines.core.common.layout import manifest_key
from backup_pipelines.core.postgres.restore_test import TEMP_MARKER
from backup_pipelines.defs.records import latest_check_record
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    RESTORE_TEST_PASSWORD,
    TEST_DATABASES,
    backup_url,
    today,
)
from backup_pipelines_tests.support.data import restore_test_databases
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    metadata_number,
    restore_test_evaluations,
    run_backup,
    run_restore_test_job,
)

RESTORE_TEST = {db: AssetKey(["postgres", db, "restore_test"]) for db in TEST_DATABASES}
CHECK = names.RESTORED_DATA_MATCHES


@pytest.fixture
def backed_up(write_config, instance) -> tuple[Path, Definitions]:
    config = write_config()
    defs = definitions_for(config)
    result = run_backup(defs, instance)
    assert result.success, failure_messages(result)
    return config, defs


def test_restore_test_passes_on_good_archives_and_drops_its_database(backed_up, cluster, instance):
    config, defs = backed_up
    result = run_restore_test_job(defs, instance)
    assert result.success, failure_messages(result)

    evaluations = restore_test_evaluations(result)
    assert set(evaluations) == set(TEST_DATABASES)
    archive_root = config.parent / "backups" / "archive"
    for database, evaluation in evaluations.items():
        assert evaluation.passed, evaluation.description
        assert evaluation.partition == today()
        manifest = json.loads((archive_root / manifest_key(database, today())).read_text())
        metadata = {name: value.value for name, value in evaluation.metadata.items()}
        assert metadata["tables_compared"] == len(manifest["relations"]) > 0
        assert metadata["rows_compared"] == sum(r["rows"] for r in manifest["relations"]) > 0
        assert metadata_number(metadata["constraints_compared"]) == len(manifest["constraints"])
        assert len(manifest["constraints"]) > 0
        assert metadata["restore_duration_seconds"] > 0
        assert metadata["mismatches"] == "none"
        # What the UI shows: the check's evidence for that database and day, and the day
        # materialized in the restore_test asset's partition bar.
        record = latest_check_record(instance, RESTORE_TEST[database], CHECK, today())
        assert record is not None and record.passed
        assert instance.get_materialized_partitions(RESTORE_TEST[database]) == {today()}
    assert restore_test_databases(cluster) == []


def test_a_backup_run_never_restores(write_config, cluster, instance):
    """Materializing dump, archive and verification (a group's backup chain, the daily job)
    evaluates their checks and starts no restore test."""
    defs = definitions_for(write_config())
    result = run_backup(defs, instance, steps=names.BACKUP_STEPS)
    assert result.success, failure_messages(result)
    evaluated = {
        event.asset_check_evaluation_data.check_name
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluated == {
        names.DUMP_COMPLETE,
        names.ARCHIVE_CHECKSUM,
        names.ARCHIVE_CONTENTS,
        names.SIZE_CHANGE,
    }
    for database in TEST_DATABASES:
        assert instance.get_materialized_partitions(RESTORE_TEST[database]) == set()
        assert latest_check_record(instance, RESTORE_TEST[database], CHECK, today()) is None
    job = defs.resolve_job_def("daily_backup")
    assert not any(key.path[-1] == "restore_test" for key in job.asset_layer.selected_asset_keys)


def test_restore_test_names_the_table_whose_rows_disagree(backed_up, cluster, instance):
    config, defs = backed_up
    manifest_path = config.parent / "backups" / "archive" / manifest_key("agentic", today())
    manifest = json.loads(manifest_path.read_text())
    messages = next(r for r in manifest["relations"] if r["name"] == "messages")
    messages["rows"] += 1
    manifest_path.write_text(json.dumps(manifest))

    result = run_restore_test_job(defs, instance, databases=["agentic"])
    assert not result.success
    evaluation = restore_test_evaluations(result)["agentic"]
    assert not evaluation.passed
    assert "public.messages" in evaluation.description
    assert f"the backup's snapshot held {messages['rows']}" in evaluation.description
    assert "public.messages" in failure_messages(result)
    assert restore_test_databases(cluster) == []


def test_restore_test_fails_on_a_truncated_archive(backed_up, cluster, instance):
    config, defs = backed_up
    (archive,) = (config.parent / "backups" / "archive" / "langfuse" / today()).glob("*.zst")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])

    result = run_restore_test_job(defs, instance, databases=["langfuse"], partition=today())
    assert not result.success
    evaluation = restore_test_evaluations(result)["langfuse"]
    assert not evaluation.passed
    assert "fails its checksum" in evaluation.description
    assert restore_test_databases(cluster) == []


def test_a_look_alike_archive_fails_verification_and_the_restore_test(backed_up, cluster, instance):
    """agentic's archive replaced by langfuse's, with a manifest forged to claim agentic: the
    checksum and every row count agree, but the archive's own header names langfuse."""
    config, defs = backed_up
    archive_root = config.parent / "backups" / "archive"
    agentic_manifest = archive_root / manifest_key("agentic", today())
    forged = json.loads((archive_root / manifest_key("langfuse", today())).read_text())
    assert forged["source_database"] == "langfuse"
    genuine = json.loads(agentic_manifest.read_text())
    (archive_root / genuine["object_key"]).write_bytes(
        (archive_root / forged["object_key"]).read_bytes()
    )
    forged.update(database="agentic", object_key=genuine["object_key"], source_database="agentic")
    agentic_manifest.write_text(json.dumps(forged))

    result = run_restore_test_job(defs, instance, databases=["agentic"])
    assert not result.success
    evaluation = restore_test_evaluations(result)["agentic"]
    assert not evaluation.passed
    assert "dumped from database 'langfuse'" in evaluation.description
    assert "not restored" in evaluation.description  # refused before any restore
    assert restore_test_databases(cluster) == []

    verified = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    checks = {e.check_name: e for e in verified.get_asset_check_evaluations()}
    assert checks[names.ARCHIVE_CHECKSUM].passed  # the forgery is self-consistent ...
    assert not checks[names.ARCHIVE_CONTENTS].passed  # ... but not agentic's backup
    assert "dumped from database 'langfuse'" in checks[names.ARCHIVE_CONTENTS].description


def test_restore_test_of_a_day_without_archive_says_so(backed_up, instance):
    _, defs = backed_up
    result = run_restore_test_job(defs, instance, databases=["agentic"], partition="2026-01-02")
    assert "database 'agentic' has no archive for 2026-01-02; archived days" in (
        failure_messages(result)
    )


def test_the_next_restore_test_drops_a_crashed_tests_leftover(backed_up, cluster, instance):
    _, defs = backed_up
    leftover = "restore_test_agentic_20260101t000000z_beef"
    real = "restore_test_lookalike"  # a real database with a similar name is never touched
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        for name in (leftover, real):
            admin.execute(f"CREATE DATABASE {name} OWNER restore_tester")
        admin.execute(f"COMMENT ON DATABASE {leftover} IS '{TEMP_MARKER}'")
    try:
        result = run_restore_test_job(defs, instance, databases=["agentic"])
        assert result.success, failure_messages(result)
        evaluation = restore_test_evaluations(result)["agentic"]
        assert evaluation.metadata["leftovers_dropped"].value == leftover
        assert restore_test_databases(cluster) == [real]
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {real}")


def test_restore_test_follows_verification_in_each_database_group(backed_up):
    _, defs = backed_up
    graph = defs.resolve_asset_graph()
    for database in TEST_DATABASES:
        assert AssetCheckKey(RESTORE_TEST[database], CHECK) in graph.asset_check_keys
        node = graph.get(RESTORE_TEST[database])
        assert node.parent_keys == {AssetKey(["postgres", database, "verification"])}
        assert node.group_name == f"postgres_{database}"


def test_a_scratch_role_without_createdb_is_named_and_no_secret_leaks(
    write_config, cluster, instance
):
    config = write_config(restore_test={"url": backup_url(cluster, "postgres")})
    defs = definitions_for(config)
    assert run_backup(defs, instance, databases=("agentic",)).success
    result = run_restore_test_job(defs, instance, databases=["agentic"])
    assert not result.success
    evaluation = restore_test_evaluations(result)["agentic"]
    assert "the role 'backup' may not create databases" in evaluation.description
    assert "restore_test.url" in evaluation.description
    # A failed test fails its day: the partition bar shows it not proven, the check says why.
    assert instance.get_materialized_partitions(RESTORE_TEST["agentic"]) == set()
    assert not latest_check_record(instance, RESTORE_TEST["agentic"], CHECK, today()).passed
    logged = "\n".join(str(event) for event in instance.all_logs(result.run_id))
    for secret in (BACKUP_PASSWORD, RESTORE_TEST_PASSWORD):
        assert secret not in logged and secret not in failure_messages(result)
