"""When the servers are backed up, observed and PITR-tested; and the test after a full backup."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from dagster import (
    AssetRecordsFilter,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import ServerConfig
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.records import latest_materialization_id
from backup_pipelines.defs.shared import utc_schedule

WAL_ARCHIVE_CRON = "*/15 * * * *"
SERVER_RETENTION_CRON = "0 6 * * *"  # after the night's base backups


def _day_of(context: ScheduleEvaluationContext) -> str:
    return context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()


def server_schedules(
    server: str,
    settings: ServerConfig,
    backup_job: AssetJob,
    test_job: AssetJob,
) -> list[ScheduleDefinition]:
    """The server's base backup (its backup_schedule) and its PITR restore test (weekly); with
    a second repository, its own base backup (same schedule) and failover drill (monthly)."""

    def today(job: AssetJob, *steps: str) -> Callable[[ScheduleEvaluationContext], RunRequest]:
        def request(context: ScheduleEvaluationContext) -> RunRequest:
            day = _day_of(context)
            return RunRequest(
                run_key=f"{job.name}_{server}_{'_'.join(steps)}_{day}",
                partition_key=day,
                asset_selection=[names.server_key(server, step) for step in steps],
            )

        return request

    backup = f"(full when '{settings.full_backup}' falls on the day, else differential)"
    schedules = [
        utc_schedule(
            names.server_backup_schedule(server),
            backup_job,
            settings.backup_schedule,
            f"Takes server {server}'s base backup {backup} and its globals",
            today(backup_job, *names.SERVER_BACKUP_STEPS),
        ),
        utc_schedule(
            names.pitr_restore_test_schedule(server),
            test_job,
            settings.restore_test.schedule,
            f"Restores server {server} to a moment on a scratch port and proves it",
            today(test_job, names.PITR_RESTORE_TEST),
        ),
    ]
    if settings.pgbackrest.repo2 is None:
        return schedules
    return [
        *schedules,
        utc_schedule(
            names.repo2_backup_schedule(server),
            backup_job,
            settings.backup_schedule,
            f"Takes server {server}'s base backup in its second repository {backup}",
            today(backup_job, names.BASE_BACKUP_REPO2),
        ),
        utc_schedule(
            names.repo2_drill_schedule(server),
            test_job,
            settings.restore_test.repo2_schedule,
            f"The failover drill: restores server {server} from its second repository alone "
            "to a moment on a scratch port and proves it",
            today(test_job, names.PITR_RESTORE_TEST_REPO2),
        ),
    ]


def wal_archive_schedule(job: AssetJob) -> ScheduleDefinition:
    return utc_schedule(
        names.WAL_ARCHIVE_SCHEDULE,
        job,
        WAL_ARCHIVE_CRON,
        "Measures every server's WAL archive lag, failures and recovery window",
    )


def server_retention_schedule(job: JobDefinition) -> ScheduleDefinition:
    return utc_schedule(
        names.SERVER_RETENTION_SCHEDULE,
        job,
        SERVER_RETENTION_CRON,
        "Expires the full backups each server's retention policy no longer keeps",
    )


def new_full_backup_sensor(servers: dict[str, ServerConfig], job: AssetJob) -> SensorDefinition:
    """A PITR restore test after each new full backup (restore_test.after_full_backup)."""
    watched = [
        name for name, settings in servers.items() if settings.restore_test.after_full_backup
    ]

    @sensor(
        name=names.NEW_FULL_BACKUP_PITR_TEST_SENSOR,
        job=job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a PITR restore test of each server after each new full backup.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult:
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        requests = []
        for server in watched:
            key = names.server_key(server, names.BASE_BACKUP)
            if server not in seen:  # first look: only backups from now on count
                seen[server] = latest_materialization_id(context.instance, key)
                continue
            records = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=seen[server]),
                limit=100,
                ascending=True,
            ).records
            for record in records:
                seen[server] = record.storage_id
                metadata = (
                    record.asset_materialization.metadata if record.asset_materialization else {}
                )
                kind = metadata.get("kind")
                if record.partition_key and kind is not None and kind.value == "full":
                    requests.append(
                        RunRequest(
                            run_key=f"{names.PITR_RESTORE_TEST_JOB}_{server}_{record.storage_id}",
                            partition_key=record.partition_key,
                            asset_selection=[names.server_key(server, names.PITR_RESTORE_TEST)],
                        )
                    )
        return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return _sensor
