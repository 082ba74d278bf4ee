"""The private Dagster APIs this project uses (backup_pipelines/dagster_private.py) still have
the shape it relies on: a Dagster upgrade that changes one fails here, not in a backup, a
schedule or a report."""

import datetime as dt
import importlib
import inspect

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    define_asset_job,
    instance_for_test,
)

from backup_pipelines.dagster_private import (
    INSTANCE_MODULES,
    AssetCheckExecutionRecordStatus,
    AssetJob,
    InstanceRef,
    PartitionKeyFilter,
    cron_string_iterator,
    is_valid_cron_string,
)
from backup_pipelines_tests.support.imports import imports_of, package_modules

DAY = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def test_only_dagster_private_imports_dagsters_private_modules():
    importers = {
        module
        for module, path in package_modules("backup_pipelines")
        if any(name.startswith("dagster._") for name in imports_of(path))
    }
    assert importers == {"backup_pipelines.dagster_private"}


def test_define_asset_job_returns_the_asset_job_type():
    assert isinstance(define_asset_job("probe", selection=[AssetKey("probe")]), AssetJob)


def test_the_cron_dialect_is_dagsters():
    assert is_valid_cron_string("0 2 * * *") and is_valid_cron_string("30 1 * * sun")
    assert not is_valid_cron_string("every day") and not is_valid_cron_string("0 0 30 2 *")
    fires = cron_string_iterator(DAY.timestamp() - 1, "0 3 * * 1", "UTC")  # Mondays at 03:00
    assert next(fires) == DAY.replace(hour=3)
    assert next(fires) == DAY.replace(hour=3) + dt.timedelta(days=7)


def test_check_history_is_read_per_partition_and_status():
    history = inspect.signature(
        importlib.import_module(
            "dagster._core.storage.event_log.base"
        ).EventLogStorage.get_asset_check_execution_history
    )
    assert {"limit", "status", "partition_filter"} <= set(history.parameters)
    assert {"SUCCEEDED", "FAILED"} <= {status.name for status in AssetCheckExecutionRecordStatus}
    key = AssetKey(["postgres", "agentic", "verification"])
    with instance_for_test() as instance:
        for day, passed in (("2026-12-06", True), ("2026-12-07", False)):
            instance.report_runless_asset_event(
                AssetCheckEvaluation(asset_key=key, check_name="c", passed=passed, partition=day)
            )
        (record,) = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(key, "c"),
            limit=10,
            status={AssetCheckExecutionRecordStatus.SUCCEEDED},
            partition_filter=PartitionKeyFilter(key="2026-12-06"),
        )
    assert record.partition == "2026-12-06" and record.evaluation.passed


def test_the_forkserver_preloads_modules_that_exist(tmp_path):
    for module in INSTANCE_MODULES:
        importlib.import_module(module)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ref = InstanceRef.from_dir(str(tmp_path))
    named = [getattr(getattr(ref, field), "module_name", None) for field in ref._fields]
    assert "dagster._core.storage.runs" in named or any(
        name and name.startswith("dagster._core.storage") for name in named
    )
