"""Alerts: one sensor for failed runs, failed checks, stale backups and overdue restore tests."""

from dagster import Definitions

from backup_pipelines.defs.alerts.sensors import backup_alerts_sensor
from backup_pipelines.defs.project import Project


def alerts_definitions(project: Project) -> Definitions:
    return Definitions(sensors=[backup_alerts_sensor(project.databases, project.config.servers)])
