"""When the database backups run: daily, and the weekly restore test."""

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

from backup_pipelines import names
from backup_pipelines.defs.postgres.jobs import restore_test_run_config
from backup_pipelines.defs.shared import utc_schedule


def daily_backup_schedule(job: UnresolvedAssetJobDefinition, cron: str) -> ScheduleDefinition:
    """Back up every database for the UTC day the tick falls on (dumps are taken 'today')."""

    @schedule(
        name=names.DAILY_BACKUP_SCHEDULE,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Backs up every configured database at '{cron}' (UTC).",
    )
    def _daily(context: ScheduleEvaluationContext) -> RunRequest:
        day = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
        return RunRequest(run_key=f"{names.DAILY_BACKUP_JOB}_{day}", partition_key=day)

    return _daily


def weekly_restore_test_schedule(job: JobDefinition, cron: str) -> ScheduleDefinition:
    return utc_schedule(
        names.WEEKLY_RESTORE_TEST_SCHEDULE,
        job,
        cron,
        "Restore-tests the newest archive of every database.",
        run_config=restore_test_run_config(databases=[], partition=None),
    )
