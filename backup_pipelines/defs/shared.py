"""Wiring every domain uses: per-day check specs, a check outcome as Dagster's check result,
metadata as the UI should show it, a UTC schedule, when a run was asked for."""

from __future__ import annotations

import contextlib
import datetime as dt
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DefaultScheduleStatus,
    Failure,
    JobDefinition,
    MetadataValue,
    PartitionsDefinition,
    PreviewWarning,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
)

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.units import human_size
from backup_pipelines.dagster_private import AssetJob

# Numbers that form a trend over the days, so the UI plots them; every other number is shown
# as text (a plot of a setting or a count of assertions is a flat line).
TREND_FIGURES = frozenset(
    {
        "size_bytes",
        "rows",
        "relations",
        "dump_seconds",
        "restore_duration_seconds",
        "backup_seconds",
        "archive_lag_seconds",
        "recovery_point_error_seconds",
        "rows_compared",
        "tables_compared",
        "objects",
        "copied",
        "referenced",
    }
)
_TREND_SUFFIXES = ("_bytes", "_objects")  # sizes and object counts of stores, by name
ScheduleResult = RunRequest | SkipReason | Iterator[RunRequest | SkipReason]


def readable(metadata: Mapping[str, object]) -> dict[str, object]:
    """Metadata as a person reads it in the UI: a human size beside every byte count, lists as
    lines (or 'none'), and only the trend figures as numbers."""
    shown: dict[str, object] = {}
    for name, value in metadata.items():
        if isinstance(value, (bool, MetadataValue)) or not isinstance(
            value, (int, float, list, tuple)
        ):
            shown[name] = value
        elif isinstance(value, (list, tuple)):
            lines = [str(item) for item in value]
            shown[name] = MetadataValue.text("\n".join(lines) if lines else "none")
        elif name in TREND_FIGURES or name.endswith(_TREND_SUFFIXES):
            shown[name] = value
        else:
            shown[name] = MetadataValue.text(f"{value:,}" if isinstance(value, int) else str(value))
        if name.endswith("_bytes") and isinstance(value, int) and not isinstance(value, bool):
            stem = name.removesuffix("_bytes")  # size_bytes -> size, total_bytes -> total_size
            shown[stem if stem == "size" else f"{stem}_size"] = human_size(value)
    return shown


@contextlib.contextmanager
def per_day_checks() -> Iterator[None]:
    """Per-partition asset checks are preview in Dagster 1.13. They are what makes each check's
    history a per-day audit record, so they are used deliberately: this silences that one
    warning, where such a check is defined, and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Specifying a partitions_def on an AssetCheckSpec", PreviewWarning
        )
        yield


def severity_of(check: str) -> AssetCheckSeverity:
    """A failure of a check in names.WARNING_CHECKS is a warning; of any other, an error."""
    return AssetCheckSeverity.WARN if check in names.WARNING_CHECKS else AssetCheckSeverity.ERROR


def check_spec(name: str, key: AssetKey, description: str, **options: Any) -> AssetCheckSpec:
    """A check that declares the severity its failures carry (shown with its definition)."""
    metadata = {"severity": severity_of(name).value}
    return AssetCheckSpec(name, asset=key, description=description, metadata=metadata, **options)


def per_day_check_spec(
    name: str,
    key: AssetKey,
    partitions: PartitionsDefinition,
    description: str,
    *,
    blocking: bool = True,
) -> AssetCheckSpec:
    """A check evaluated, and kept in its history, per daily partition of `key`."""
    with per_day_checks():
        return check_spec(name, key, description, blocking=blocking, partitions_def=partitions)


def check_result(outcome: CheckOutcome, key: AssetKey) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=severity_of(outcome.name),
        description=outcome.description,
        metadata=readable(outcome.metadata),
    )


def utc_schedule(
    name: str,
    job: JobDefinition | AssetJob,
    cron: str,
    description: str,
    evaluate: Callable[[ScheduleEvaluationContext], ScheduleResult] | None = None,
) -> ScheduleDefinition:
    """A schedule that is on from the start, in UTC; `evaluate` decides each tick's runs
    (default: one run of `job`)."""
    return ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        execution_fn=evaluate,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"{description} ('{cron}', UTC)",
    )


def run_submitted_at(context: AssetExecutionContext) -> dt.datetime | None:
    """When the run was submitted (for a retry or re-execution: the run it repeats), which is
    when the day it asked for was fixed: queued before midnight, it still takes that day."""
    run = context.run
    record = context.instance.get_run_record_by_id(run.root_run_id or run.run_id)
    if record is None:
        return None
    created = record.create_timestamp
    return created if created.tzinfo else created.replace(tzinfo=dt.UTC)


def require_configured(job: str, kind: str, name: str, configured: Collection[str]) -> None:
    """Fail a run that names a database or server the configuration does not have."""
    if name not in configured:
        raise Failure(
            f"{job}: unknown {kind} {name!r}; configured {kind}s: {', '.join(configured) or 'none'}"
        )
