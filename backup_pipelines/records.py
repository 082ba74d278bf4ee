"""What Dagster recorded about each backup: check evaluations per database and day.

Read from the instance's event log, so reports built from them match what the UI shows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

_HISTORY_LIMIT = 100_000  # every day of a database for centuries
_FINISHED = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}


@dataclass(frozen=True)
class CheckRecord:
    passed: bool
    description: str
    metadata: dict[str, Any]
    evaluated_at: dt.datetime
    run_id: str


def latest_check_record(
    instance: DagsterInstance, asset_key: AssetKey, check_name: str, partition: str
) -> CheckRecord | None:
    """The newest finished evaluation of one check for one day, or None if it never ran."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(asset_key, check_name),
        limit=1,
        status=_FINISHED,
        partition_filter=PartitionKeyFilter(key=partition),
    )
    if not history or history[0].evaluation is None or history[0].event is None:
        return None
    record, evaluation = history[0], history[0].evaluation
    return CheckRecord(
        passed=evaluation.passed,
        description=evaluation.description or "",
        metadata={name: value.value for name, value in evaluation.metadata.items()},
        evaluated_at=dt.datetime.fromtimestamp(record.event.timestamp, dt.UTC),
        run_id=record.run_id,
    )


def latest_check_record_id(instance: DagsterInstance, asset_key: AssetKey, check_name: str) -> int:
    """Storage id of the newest finished evaluation of a check (any day); 0 if none."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(asset_key, check_name), limit=1, status=_FINISHED
    )
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
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(asset_key, name), limit=_HISTORY_LIMIT, status=_FINISHED
        )
        for record in history:  # newest first
            if record.partition is not None:
                newest.setdefault(record.partition, {}).setdefault(
                    name, record.status == AssetCheckExecutionRecordStatus.SUCCEEDED
                )
    outcomes = {}
    for day, passed in newest.items():
        if not all(passed.values()):
            outcomes[day] = False
        elif len(passed) == len(check_names):
            outcomes[day] = True
    return outcomes
