"""Storage usage: measured hourly, with a capacity check when storage.capacity_gb is set."""

from dagster import Definitions

from backup_pipelines.defs.project import Project
from backup_pipelines.defs.usage.assets import storage_usage_asset
from backup_pipelines.defs.usage.jobs import storage_usage_job
from backup_pipelines.defs.usage.schedules import storage_usage_schedule


def usage_definitions(project: Project) -> Definitions:
    capacity = project.config.storage.capacity_gb
    return Definitions(
        assets=[storage_usage_asset(project.databases, project.buckets, capacity)],
        jobs=[storage_usage_job],
        schedules=[storage_usage_schedule],
    )
