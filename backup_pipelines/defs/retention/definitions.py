"""Retention: the hourly plan and the prune job that carries it out."""

from dagster import Definitions

from backup_pipelines.defs.project import Project
from backup_pipelines.defs.retention.jobs import prune_backups_job
from backup_pipelines.defs.retention.sensors import retention_sensor


def retention_definitions(project: Project) -> Definitions:
    return Definitions(jobs=[prune_backups_job], sensors=[retention_sensor(prune_backups_job)])
