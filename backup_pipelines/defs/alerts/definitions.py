"""Alerts: one sensor for failed runs, failed checks, stale backups and overdue restore tests."""

from dagster import Definitions

from backup_pipelines.defs.alerts.sensors import backup_alerts_sensor
from backup_pipelines.defs.project import Project


def alerts_definitions(project: Project) -> Definitions:
    config = project.config
    return Definitions(
        sensors=[backup_alerts_sensor(project.databases, config.servers, config.config_sources())]
    )
