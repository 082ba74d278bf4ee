"""The audit report, built from Dagster's records of real backups, tests and prunes."""

import csv
import datetime as dt
import io

from dagster import AssetCheckEvaluation, AssetKey, materialize

from backup_pipelines import names
from backup_pipelines.defs.alerts.health import last_restore_test
from backup_pipelines.defs.recovery.audit import audit_table
from backup_pipelines_tests.support.config import today, yesterday
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    run_backup,
    run_restore_test_job,
)


def test_audit_report_matches_what_happened(write_config, instance):
    config = write_config(start_date=yesterday(), audit={"days": 30})
    defs = definitions_for(config)
    assert run_backup(defs, instance).success
    assert run_restore_test_job(defs, instance, databases=["agentic"]).success
    result = materialize(
        list(defs.assets),
        selection=[AssetKey(["audit_report"])],
        instance=instance,
        resources=defs.resources,
    )
    assert result.success, failure_messages(result)
    (materialization,) = result.asset_materializations_for_node("audit_report")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    # Two databases x two days (yesterday had no backup); restore-tested: agentic today.
    assert metadata["rows"] == 4
    assert metadata["days_with_verified_backup_pct"] == 50.0
    assert metadata["days_restore_tested_pct"] == 25.0

    archive = config.parent / "backups" / "archive" / "audit"
    table = csv.DictReader(io.StringIO((archive / "audit_report.csv").read_text()))
    rows = {(r["database"], r["day"]): r for r in table}
    agentic = rows[("agentic", today())]
    (dump,) = instance.fetch_materializations(
        AssetKey(["postgres", "agentic", "dump"]), limit=1
    ).records
    assert agentic["archived"] == "True" and agentic["verified"] == "True"
    assert agentic[names.ARCHIVE_CHECKSUM] == agentic[names.ARCHIVE_CONTENTS] == "passed"
    assert agentic[names.RESTORED_DATA_MATCHES] == "passed" and int(agentic["rows_compared"]) > 0
    assert agentic["sha256"] == dump.asset_materialization.metadata["sha256"].value
    assert agentic["snapshot_taken_at"].startswith(today())
    assert rows[("langfuse", today())][names.RESTORED_DATA_MATCHES] == ""
    assert rows[("agentic", yesterday())]["archived"] == "False"
    page = (archive / "audit_report.html").read_text()
    assert "Days with a verified backup: <b>50.0%</b>" in page and "<script" not in page


def test_restore_tests_recorded_before_the_restore_test_asset_still_count(write_config, instance):
    """Older deployments recorded restore tests as the check `restore_test` on the verification
    asset; that history is read where the new one is, not migrated."""
    defs = definitions_for(write_config(start_date=yesterday(), audit={"days": 30}))
    assert run_backup(defs, instance).success
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=AssetKey(["postgres", "langfuse", "verification"]),
            check_name="restore_test",
            passed=True,
            partition=today(),
            metadata={"restore_duration_seconds": 1.5, "rows_compared": 7},
        )
    )
    day = dt.date.fromisoformat(today())
    table = audit_table(instance, ["langfuse"], day, day)
    assert list(table[names.RESTORED_DATA_MATCHES]) == ["passed"]
    assert list(table["rows_compared"]) == [7]
    assert last_restore_test(instance, "langfuse").evaluation.passed
