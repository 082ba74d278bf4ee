"""When jobs run: the daily backup and the weekly restore test."""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from backup_pipelines.restore_jobs import restore_test_run_config


def daily_backup_schedule(job: UnresolvedAssetJobDefinition, cron: str) -> ScheduleDefinition:
    """Back up every database for the UTC day the tick falls on (dumps are taken 'today')."""

    @schedule(
        name="daily_backup_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Backs up every configured database at '{cron}' (UTC).",
    )
    def _daily(context: ScheduleEvaluationContext) -> RunRequest:
        day = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
        return RunRequest(run_key=f"daily_backup_{day}", partition_key=day)

    return _daily


def utc_schedule(
    name: str,
    job: JobDefinition | UnresolvedAssetJobDefinition,
    cron: str,
    description: str,
    run_config: dict[str, object] | None = None,
) -> ScheduleDefinition:
    """A schedule that is on from the start, in UTC."""
    return ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        run_config=run_config,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"{description} ('{cron}', UTC)",
    )


def weekly_restore_test_schedule(job: JobDefinition, cron: str) -> ScheduleDefinition:
    return utc_schedule(
        "weekly_restore_test_schedule",
        job,
        cron,
        "Restore-tests the newest archive of every database.",
        run_config=restore_test_run_config(databases=[], partition=None),
    )


def storage_usage_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return utc_schedule(
        "storage_usage_schedule", job, "40 * * * *", "Measures what the backups use, hourly."
    )


def daily_audit_report_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return utc_schedule(
        "daily_audit_report_schedule", job, "0 6 * * *", "Writes the audit report daily."
    )
