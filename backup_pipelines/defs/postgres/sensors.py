"""Act on every newly verified archive: restore-test it (config:
restore_test.test_each_new_archive), copy it to the replica store (config: replica)."""

import json

from dagster import (
    AssetRecordsFilter,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from backup_pipelines import names
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.postgres.jobs import per_day_requests
from backup_pipelines.defs.records import latest_materialization_id

_BATCH = 100


def new_archive_restore_test_sensor(
    databases: list[str], job: AssetJob, enabled: bool
) -> SensorDefinition:
    """Restore-test every newly verified archive (config: restore_test.test_each_new_archive)."""
    return new_verification_sensor(
        names.NEW_ARCHIVE_RESTORE_TEST_SENSOR,
        "Requests a restore test of each newly verified archive.",
        databases,
        job,
        names.RESTORE_TEST,
        enabled,
    )


def new_verification_sensor(
    name: str,
    description: str,
    databases: list[str],
    job: AssetJob,
    step: str,
    enabled: bool,
    interval_seconds: int = 60,
) -> SensorDefinition:
    """Requests `step` of every database and day whose verification materialized since the
    last tick, once each (the run key names the verifications)."""

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        description=description,
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult:
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        new: dict[str, list[tuple[str, int]]] = {}  # day -> (database, storage id)
        for database in databases:
            key = names.database_key(database, names.VERIFICATION)
            if database not in seen:  # first look: only archives verified from now on count
                seen[database] = latest_materialization_id(context.instance, key)
                continue
            records = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=seen[database]),
                limit=_BATCH,
                ascending=True,
            ).records
            for record in records:
                if record.partition_key:
                    new.setdefault(record.partition_key, []).append((database, record.storage_id))
                seen[database] = record.storage_id
        requests = [
            request
            for day, found in new.items()
            for request in per_day_requests(
                {day: sorted({db for db, _ in found})},
                f"{job.name}_" + "_".join(f"{db}-{sid}" for db, sid in found),
                step,
            )
        ]
        return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return _sensor
