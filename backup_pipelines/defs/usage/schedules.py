"""Storage measured hourly."""

from dagster import ScheduleDefinition

from backup_pipelines import names
from backup_pipelines.defs.shared import utc_schedule
from backup_pipelines.defs.usage.jobs import storage_usage_job

storage_usage_schedule: ScheduleDefinition = utc_schedule(
    names.STORAGE_USAGE_SCHEDULE,
    storage_usage_job,
    "40 * * * *",
    "Measures what the backups use, hourly.",
)
