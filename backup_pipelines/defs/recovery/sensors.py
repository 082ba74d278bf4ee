"""Keep the recovery runbook current: rewrite it after every verification and restore test."""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from backup_pipelines import names
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.records import latest_check_record_id, latest_materialization_id


def recovery_runbook_sensor(
    databases: list[str], job: AssetJob, *, replicated: bool = False
) -> SensorDefinition:
    """Regenerate the runbook after every verification and every restore test (and, with a
    replica store, every proved copy there: the runbook gives both locations)."""

    @sensor(
        name=names.RUNBOOK_SENSOR,
        job=job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Rewrites the recovery runbook when an archive is verified, copied to the "
        "replica store or restore-tested.",
    )
    def _sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        state = []
        for database in databases:
            key = names.database_key(database, names.VERIFICATION)
            state.append(latest_materialization_id(context.instance, key))
            tested = names.database_key(database, names.RESTORE_TEST)
            state.append(
                latest_check_record_id(context.instance, tested, names.RESTORED_DATA_MATCHES)
            )
            if replicated:
                copy = names.database_key(database, names.REPLICA)
                state.append(latest_check_record_id(context.instance, copy, names.REPLICA_VERIFIED))
        fingerprint = ",".join(map(str, state))
        if fingerprint == context.cursor:
            return SkipReason("no archive verified or restore-tested since the last runbook")
        context.update_cursor(fingerprint)
        return RunRequest(run_key=f"recovery_runbook_{fingerprint}")

    return _sensor
