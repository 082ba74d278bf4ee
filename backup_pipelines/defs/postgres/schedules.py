"""When the database backups run: daily, and the weekly restore test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from dagster import RunRequest, ScheduleDefinition, ScheduleEvaluationContext, SkipReason

from backup_pipelines import names
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.postgres.jobs import per_day_requests
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
    return newest_verified_schedule(
        names.WEEKLY_RESTORE_TEST_SCHEDULE,
        job,
        databases,
        cron,
        "Restore-tests the newest verified archive of every database",
        tested=(names.VERIFICATION, names.RESTORE_TEST),
    )


def newest_verified_schedule(
    name: str,
    job: AssetJob,
    databases: list[str],
    cron: str,
    description: str,
    tested: tuple[str, str],
) -> ScheduleDefinition:
    """Runs `tested` = (proved step, test step): each tick requests the test step of every
    database's newest day whose proved step passed (one run per day those fall on)."""
    proved, test = tested

    def newest(context: ScheduleEvaluationContext) -> Iterator[RunRequest | SkipReason]:
        by_day: dict[str, list[str]] = {}
        for database in databases:
            day = newest_verified_day(context.instance, database, proved)
            if day is not None:
                by_day.setdefault(day, []).append(database)
        if not by_day:
            yield SkipReason(f"no database has a proved {proved} yet")
            return
        tick = context.scheduled_execution_time.astimezone(dt.UTC)
        yield from per_day_requests(by_day, f"{job.name}_{tick:%Y%m%dT%H%M}", test)

    return utc_schedule(name, job, cron, description, newest)
