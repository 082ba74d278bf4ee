"""The audit report, written daily; the recovery objectives, every 15 minutes."""

from dagster import ScheduleDefinition

from backup_pipelines import names
from backup_pipelines.defs.recovery.jobs import audit_report_job, objectives_job
from backup_pipelines.defs.shared import utc_schedule

daily_audit_report_schedule: ScheduleDefinition = utc_schedule(
    names.AUDIT_REPORT_SCHEDULE, audit_report_job, "0 6 * * *", "Writes the audit report daily."
)
# An RPO ages by the minute: evaluated at least this often, and after new evidence (sensors.py).
objectives_schedule: ScheduleDefinition = utc_schedule(
    names.OBJECTIVES_SCHEDULE,
    objectives_job,
    "*/15 * * * *",
    "Re-evaluates the recovery objectives (RPO and RTO) every 15 minutes",
)
