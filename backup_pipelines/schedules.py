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


def weekly_restore_test_schedule(job: JobDefinition, cron: str) -> ScheduleDefinition:
    """Restore-test the newest archive of every database."""
    return ScheduleDefinition(
        name="weekly_restore_test_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        run_config=restore_test_run_config(databases=[], partition=None),
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Restore-tests the newest archive of every database at '{cron}' (UTC).",
    )


def storage_usage_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="storage_usage_schedule",
        cron_schedule="40 * * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Measures what the backups use, hourly.",
    )


def daily_audit_report_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="daily_audit_report_schedule",
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Writes the audit report daily at 06:00 UTC.",
    )
