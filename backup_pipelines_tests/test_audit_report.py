"""The audit report, built from Dagster's records of real backups, tests and prunes."""

import csv
import io

from dagster import AssetKey, materialize

from backup_pipelines_tests.helpers import (
    definitions_for,
    failure_messages,
    run_backup,
    run_restore_test_job,
    today,
    yesterday,
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
    assert agentic["archive_checksum"] == agentic["archive_contents"] == "passed"
    assert agentic["restore_test"] == "passed" and int(agentic["rows_compared"]) > 0
    assert agentic["sha256"] == dump.asset_materialization.metadata["sha256"].value
    assert agentic["snapshot_taken_at"].startswith(today())
    assert rows[("langfuse", today())]["restore_test"] == ""
    assert rows[("agentic", yesterday())]["archived"] == "False"
    page = (archive / "audit_report.html").read_text()
    assert "Days with a verified backup: <b>50.0%</b>" in page and "<script" not in page
