"""When the database backups run: daily, and the weekly restore test."""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from backup_pipelines import names
from backup_pipelines.defs.postgres.jobs import restore_test_requests
from backup_pipelines.defs.records import newest_verified_day


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


def weekly_restore_test_schedule(
    job: UnresolvedAssetJobDefinition, databases: list[str], cron: str
) -> ScheduleDefinition:
    """Restore-test each database's newest verified archive (one run per day those fall on)."""

    @schedule(
        name=names.WEEKLY_RESTORE_TEST_SCHEDULE,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Restore-tests the newest verified archive of every database at '{cron}' "
        "(UTC).",
    )
    def _weekly(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        by_day: dict[str, list[str]] = {}
        for database in databases:
            day = newest_verified_day(context.instance, database)
            if day is not None:
                by_day.setdefault(day, []).append(database)
        if not by_day:
            return SkipReason("no database has a verified archive yet")
        tick = context.scheduled_execution_time.astimezone(dt.UTC)
        return restore_test_requests(by_day, f"{names.RESTORE_TEST_JOB}_{tick:%Y%m%dT%H%M}")

    return _weekly
