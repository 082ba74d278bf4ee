"""Recovery: the runbook next to the archives, the audit report and, where objectives are
promised, the recovery objectives."""

from dagster import Definitions

from backup_pipelines.defs.project import Project
from backup_pipelines.defs.recovery.assets import (
    audit_report_asset,
    recovery_runbook_asset,
    restore_tests,
)
from backup_pipelines.defs.recovery.jobs import audit_report_job, objectives_job, runbook_job
from backup_pipelines.defs.recovery.objectives import (
    evidence,
    promises,
    recovery_objectives_asset,
)
from backup_pipelines.defs.recovery.schedules import (
    daily_audit_report_schedule,
    objectives_schedule,
)
from backup_pipelines.defs.recovery.sensors import objectives_sensor, recovery_runbook_sensor


def recovery_definitions(project: Project) -> Definitions:
    servers, tests = list(project.config.servers), restore_tests(project.config)
    recovery = Definitions(
        assets=[
            recovery_runbook_asset(project.databases, servers, tests),
            audit_report_asset(project.databases, servers, tests),
        ],
        jobs=[runbook_job, audit_report_job],
        schedules=[daily_audit_report_schedule],
        sensors=[
            recovery_runbook_sensor(
                project.databases,
                runbook_job,
                replicated=project.config.replica is not None,
                configs=project.config.config_sources(),
            )
        ],
    )
    if not promises(project.config):
        return recovery
    watched = evidence(project.config)
    return Definitions.merge(
        recovery,
        Definitions(
            assets=[recovery_objectives_asset()],
            jobs=[objectives_job],
            schedules=[objectives_schedule],
            sensors=[objectives_sensor(watched, objectives_job)],
        ),
    )
