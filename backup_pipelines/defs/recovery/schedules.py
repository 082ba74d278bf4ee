"""The audit report, written daily."""

from dagster import ScheduleDefinition

from backup_pipelines import names
from backup_pipelines.defs.recovery.jobs import audit_report_job
from backup_pipelines.defs.shared import utc_schedule

daily_audit_report_schedule: ScheduleDefinition = utc_schedule(
    names.AUDIT_REPORT_SCHEDULE, audit_report_job, "0 6 * * *", "Writes the audit report daily."
)
