"""Wiring every domain uses: per-day check specs, a check outcome as Dagster's check result, a
UTC schedule."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DefaultScheduleStatus,
    JobDefinition,
    PartitionsDefinition,
    PreviewWarning,
    ScheduleDefinition,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from backup_pipelines.core.verification import CheckOutcome


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
        return AssetCheckSpec(
            name, asset=key, description=description, blocking=blocking, partitions_def=partitions
        )


def check_result(outcome: CheckOutcome, key: AssetKey) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if outcome.warning_only else AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata,
    )


def utc_schedule(
    name: str,
    job: JobDefinition | UnresolvedAssetJobDefinition,
    cron: str,
    description: str,
    run_config: dict[str, object] | None = None,
) -> ScheduleDefinition:
    """A schedule that is on from the start, in UTC."""
    return ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        run_config=run_config,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"{description} ('{cron}', UTC)",
    )
