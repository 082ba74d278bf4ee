"""Configuration backups: per source config/<name> (each server's PostgreSQL files too), the
daily job and its schedule, and the restore job."""

import datetime as dt

from dagster import Definitions, RunRequest, ScheduleEvaluationContext

from backup_pipelines import names
from backup_pipelines.defs.configs.assets import config_asset
from backup_pipelines.defs.configs.jobs import config_backup_job, restore_config_job
from backup_pipelines.defs.project import Project
from backup_pipelines.defs.shared import utc_schedule


def _today(context: ScheduleEvaluationContext) -> RunRequest:
    day = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
    return RunRequest(run_key=f"{names.CONFIG_BACKUP_JOB}_{day}", partition_key=day)


def configs_definitions(project: Project) -> Definitions:
    config = project.config
    sources = config.config_sources()
    if not sources:
        return Definitions()
    return Definitions(
        assets=[config_asset(config, name, project.partitions) for name in sources],
        jobs=[config_backup_job, restore_config_job],
        schedules=[
            utc_schedule(
                names.CONFIG_BACKUP_SCHEDULE,
                config_backup_job,
                config.schedule,
                "Snapshots every configuration source",
                _today,
            )
        ],
    )
