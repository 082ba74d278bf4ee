"""What Dagster recorded about each backup: check evaluations per database and day.

Read from the instance's event log, so reports built from them match what the UI shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
)

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckRecord
from backup_pipelines.dagster_private import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
    PartitionKeyFilter,
)

_HISTORY_LIMIT = 100_000  # every day of a database for centuries
_PAGE = 10_000  # the most Dagster returns in one call
_FINISHED = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
_PASSED = {AssetCheckExecutionRecordStatus.SUCCEEDED}


def check_history(
    instance: DagsterInstance,
    asset_key: AssetKey,
    check_name: str,
    *,
    limit: int = 1,
    passed_only: bool = False,
    partition: str | None = None,
) -> Sequence[AssetCheckExecutionRecord]:
    """Finished evaluations of one check, newest first (of one day, when `partition` is set).

    A restore test's history includes the evaluations recorded under its legacy name."""
    records = [
        record
        for check_key in _recorded_as(AssetCheckKey(asset_key, check_name))
        for record in instance.event_log_storage.get_asset_check_execution_history(
            check_key,
            limit=limit,
            status=_PASSED if passed_only else _FINISHED,
            partition_filter=None if partition is None else PartitionKeyFilter(key=partition),
        )
    ]
    return sorted(records, key=lambda record: record.id, reverse=True)[:limit]


def _recorded_as(check_key: AssetCheckKey) -> list[AssetCheckKey]:
    """The keys a check's evaluations are recorded under: its own, and for the restore test
    also the check it used to be on the verification asset (read, never written)."""
    path = check_key.asset_key.path
    if path[0] != names.DATABASE_PREFIX or check_key.name != names.RESTORED_DATA_MATCHES:
        return [check_key]
    step, legacy_name = names.LEGACY_RESTORE_TEST_CHECK
    return [check_key, AssetCheckKey(names.database_key(path[1], step), legacy_name)]


def evaluated_at(record: AssetCheckExecutionRecord) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(record.event.timestamp, dt.UTC) if record.event else None


def newest_by_day(
    instance: DagsterInstance, asset_key: AssetKey, check_name: str
) -> dict[str, AssetCheckEvaluation]:
    """The newest finished evaluation of a check for every day it ran."""
    newest: dict[str, AssetCheckEvaluation] = {}
    for record in check_history(instance, asset_key, check_name, limit=_HISTORY_LIMIT):
        if record.partition and record.partition not in newest and record.evaluation:
            newest[record.partition] = record.evaluation
    return newest


def check_records(
    instance: DagsterInstance,
    asset_key: AssetKey,
    check_name: str,
    partition: str | None = None,
    *,
    limit: int = 1,
) -> list[CheckRecord]:
    """The newest finished evaluations of one check (of one day, when `partition` is set),
    newest first."""
    return [
        CheckRecord(
            passed=record.evaluation.passed,
            description=record.evaluation.description or "",
            metadata={name: value.value for name, value in record.evaluation.metadata.items()},
            evaluated_at=dt.datetime.fromtimestamp(record.event.timestamp, dt.UTC),
            run_id=record.run_id,
        )
        for record in check_history(
            instance, asset_key, check_name, partition=partition, limit=limit
        )
        if record.evaluation is not None and record.event is not None
    ]


def latest_check_record(
    instance: DagsterInstance, asset_key: AssetKey, check_name: str, partition: str | None
) -> CheckRecord | None:
    """The newest finished evaluation of one check for one day (None: any day), or None if it
    never ran."""
    records = check_records(instance, asset_key, check_name, partition)
    return records[0] if records else None


def latest_check_record_id(instance: DagsterInstance, asset_key: AssetKey, check_name: str) -> int:
    """Storage id of the newest finished evaluation of a check (any day); 0 if none."""
    history = check_history(instance, asset_key, check_name)
    return history[0].id if history else 0


def latest_materialization_id(instance: DagsterInstance, asset_key: AssetKey) -> int:
    """Storage id of an asset's newest materialization (any partition); 0 if none."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=asset_key), limit=1)
    return records.records[0].storage_id if records.records else 0


def verification_outcomes(
    instance: DagsterInstance, asset_key: AssetKey, check_names: tuple[str, ...]
) -> dict[str, bool]:
    """Per day: True if the newest evaluation of every check passed, False if any failed.

    Days where some check never finished are absent (not verified)."""
    newest: dict[str, dict[str, bool]] = {}
    for name in check_names:
        for day, evaluation in newest_by_day(instance, asset_key, name).items():
            newest.setdefault(day, {})[name] = evaluation.passed
    outcomes = {}
    for day, passed in newest.items():
        if not all(passed.values()):
            outcomes[day] = False
        elif len(passed) == len(check_names):
            outcomes[day] = True
    return outcomes


def verified_days(
    instance: DagsterInstance, database: str, step: str = names.VERIFICATION
) -> list[str]:
    """The days whose archive of `database` passed both verifying checks (with `step`
    REPLICA: whose copy in the replica store was proved), oldest first."""
    key = names.database_key(database, step)
    verified = verification_outcomes(instance, key, names.PROVING_CHECKS[step])
    return sorted(day for day, passed in verified.items() if passed)


def newest_verified_day(
    instance: DagsterInstance, database: str, step: str = names.VERIFICATION
) -> str | None:
    """The newest day whose archive of `database` passed both verifying checks (with `step`
    REPLICA: whose replica was proved)."""
    days = verified_days(instance, database, step)
    return days[-1] if days else None


def latest_metadata(
    instance: DagsterInstance, key: AssetKey, partition: str | None = None
) -> tuple[dict[str, object], dt.datetime | None]:
    """The newest materialization's metadata values (of one day, with `partition`) and when
    it was recorded; ({}, None) if there is none."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return {}, None
    metadata = records[0].asset_materialization.metadata
    recorded = dt.datetime.fromtimestamp(records[0].timestamp, dt.UTC)
    return {name: value.value for name, value in metadata.items()}, recorded


def all_records(fetch: Any, key: AssetKey) -> list[Any]:
    """Every record `fetch` (fetch_materializations or fetch_observations) has, newest first."""
    records, cursor = [], None
    while True:
        page = fetch(AssetRecordsFilter(asset_key=key), limit=_PAGE, cursor=cursor)
        records += page.records
        if not page.has_more:
            return records
        cursor = page.cursor


def newest_by_partition(records: list[Any]) -> dict[str, Any]:
    """The newest of `records` (newest first) for every partition."""
    newest: dict[str, Any] = {}
    for record in records:
        if record.partition_key and record.partition_key not in newest:
            newest[record.partition_key] = record
    return newest


def materialized_at(instance: DagsterInstance, key: AssetKey) -> dict[str, dt.datetime]:
    """When each partition of `key` was last materialized."""
    newest = newest_by_partition(all_records(instance.fetch_materializations, key))
    return {
        partition: dt.datetime.fromtimestamp(record.timestamp, dt.UTC)
        for partition, record in newest.items()
    }
