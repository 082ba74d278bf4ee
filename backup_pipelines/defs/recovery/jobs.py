"""Jobs that rewrite the recovery runbook and the audit report."""

from dagster import AssetSelection, define_asset_job

from backup_pipelines import names

runbook_job = define_asset_job(
    names.RUNBOOK_JOB,
    selection=AssetSelection.assets(names.RECOVERY_RUNBOOK),
    description="Rewrite the recovery runbook next to the archives.",
)
audit_report_job = define_asset_job(
    names.AUDIT_REPORT_JOB,
    selection=AssetSelection.assets(names.AUDIT_REPORT),
    description="Write the audit report (CSV and HTML) next to the archives.",
)
objectives_job = define_asset_job(
    names.OBJECTIVES_JOB,
    selection=AssetSelection.assets(names.RECOVERY_OBJECTIVES),
    description="Evaluate every recovery objective (RPO and RTO) against the newest evidence.",
)
