"""Keep the recovery runbook current (rewrite it after every verification and restore test) and
the recovery objectives (evaluate them after every piece of new evidence)."""

from collections.abc import Callable, Sequence

from dagster import (
    AssetKey,
    DagsterInstance,
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


def _on_new_records(
    name: str,
    job: AssetJob,
    description: str,
    newest_ids: Callable[[DagsterInstance], list[int]],
    interval_seconds: int,
) -> SensorDefinition:
    """Run `job` once whenever the records `newest_ids` reads have changed since its last run."""

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        fingerprint = ",".join(map(str, newest_ids(context.instance)))
        if fingerprint == context.cursor:
            return SkipReason("nothing new recorded since the last run")
        context.update_cursor(fingerprint)
        return RunRequest(run_key=f"{job.name}_{fingerprint}")

    return _sensor


def recovery_runbook_sensor(
    databases: list[str], job: AssetJob, *, replicated: bool = False, configs: Sequence[str] = ()
) -> SensorDefinition:
    """Regenerate the runbook after every verification and every restore test (and, with a
    replica store, every proved copy there: the runbook gives both locations), and every
    configuration snapshot."""

    def newest_ids(instance: DagsterInstance) -> list[int]:
        state = []
        for database in databases:
            key = names.database_key(database, names.VERIFICATION)
            state.append(latest_materialization_id(instance, key))
            tested = names.database_key(database, names.RESTORE_TEST)
            state.append(latest_check_record_id(instance, tested, names.RESTORED_DATA_MATCHES))
            if replicated:
                copy = names.database_key(database, names.REPLICA)
                state.append(latest_check_record_id(instance, copy, names.REPLICA_VERIFIED))
        for source in configs:
            state.append(latest_materialization_id(instance, names.config_key(source)))
        return state

    return _on_new_records(
        names.RUNBOOK_SENSOR,
        job,
        "Rewrites the recovery runbook when an archive is verified, copied to the replica store "
        "or restore-tested, and when a configuration is snapshotted.",
        newest_ids,
        interval_seconds=60,
    )


def objectives_sensor(watched: list[AssetKey], job: AssetJob) -> SensorDefinition:
    """Evaluate the objectives after each verification, restore test, base backup and WAL
    observation (`watched`)."""
    return _on_new_records(
        names.OBJECTIVES_SENSOR,
        job,
        "Re-evaluates the recovery objectives after each verification, restore test, base "
        "backup and WAL observation.",
        lambda instance: [latest_materialization_id(instance, key) for key in watched],
        interval_seconds=30,
    )
