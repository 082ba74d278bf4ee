"""When the database backups run: daily, and the weekly restore test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from dagster import RunRequest, ScheduleDefinition, ScheduleEvaluationContext, SkipReason

from backup_pipelines import names
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.postgres.jobs import restore_test_requests
from backup_pipelines.defs.records import newest_verified_day
from backup_pipelines.defs.shared import utc_schedule


def daily_backup_schedule(job: AssetJob, cron: str) -> ScheduleDefinition:
    """Back up every database for the UTC day the tick falls on (dumps are taken 'today')."""

    def today(context: ScheduleEvaluationContext) -> RunRequest:
        day = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
        return RunRequest(run_key=f"{names.DAILY_BACKUP_JOB}_{day}", partition_key=day)

    return utc_schedule(
        names.DAILY_BACKUP_SCHEDULE, job, cron, "Backs up every configured database", today
    )


def weekly_restore_test_schedule(
    job: AssetJob, databases: list[str], cron: str
) -> ScheduleDefinition:
    """Restore-test each database's newest verified archive (one run per day those fall on)."""

    def newest_archives(context: ScheduleEvaluationContext) -> Iterator[RunRequest | SkipReason]:
        by_day: dict[str, list[str]] = {}
        for database in databases:
            day = newest_verified_day(context.instance, database)
            if day is not None:
                by_day.setdefault(day, []).append(database)
        if not by_day:
            yield SkipReason("no database has a verified archive yet")
            return
        tick = context.scheduled_execution_time.astimezone(dt.UTC)
        yield from restore_test_requests(by_day, f"{names.RESTORE_TEST_JOB}_{tick:%Y%m%dT%H%M}")

    return utc_schedule(
        names.WEEKLY_RESTORE_TEST_SCHEDULE,
        job,
        cron,
        "Restore-tests the newest verified archive of every database",
        newest_archives,
    )
