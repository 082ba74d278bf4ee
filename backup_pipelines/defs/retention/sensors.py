"""Plan retention hourly from what storage holds; launch prune_backups when something expired."""

import hashlib
import json

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from backup_pipelines import names
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.retention.jobs import plan_all, prune_run_config


def retention_sensor(job: JobDefinition) -> SensorDefinition:
    """Plan retention from what storage holds; launch prune_backups when something expired."""

    @sensor(
        name=names.RETENTION_SENSOR,
        job=job,
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING,
        description="Hourly: computes each database's retention plan from storage and launches "
        "prune_backups with the objects to delete listed in its run config.",
    )
    def _sensor(
        context: SensorEvaluationContext, settings: BackupSettings
    ) -> RunRequest | SkipReason:
        plans = plan_all(settings, context.instance)
        kept = sum(len(plan.kept) for plan in plans)
        if not any(plan.deletions for plan in plans):
            return SkipReason(
                f"nothing expired; {kept} backups kept of {len(plans)} databases, replicas, "
                "buckets and configuration sources"
            )
        run_config = prune_run_config(settings, plans, settings.config().retention.dry_run)
        digest = hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()
        return RunRequest(run_key=f"prune_{digest[:16]}", run_config=run_config)

    return _sensor
