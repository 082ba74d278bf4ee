"""When backups run: the daily schedule of the backup job."""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)


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
