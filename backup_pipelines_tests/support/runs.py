"""Running the definitions as the UI and the daemon would: backups, restore tests, restores,
the runbook and the alerts sensor, and reading what they recorded."""

import datetime as dt
from pathlib import Path

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    build_sensor_context,
    materialize,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.alerts.state import AlertState
from backup_pipelines_tests.support.config import TEST_DATABASES, today


def definitions_for(config_path: Path) -> Definitions:
    return build_definitions(load_config(config_path), str(config_path))


def run_backup(
    defs: Definitions,
    instance: DagsterInstance,
    day: str | None = None,
    steps: tuple[str, ...] = names.BACKUP_STEPS,
    databases: tuple[str, ...] = TEST_DATABASES,
) -> ExecuteInProcessResult:
    """Materialize the chosen steps of the chosen databases for one day, as the UI would."""
    return materialize(
        assets=list(defs.assets or []),
        selection=[names.database_key(db, step) for db in databases for step in steps],
        partition_key=day or today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def materialization(
    result: ExecuteInProcessResult, database: str, step: str
) -> AssetMaterialization:
    """The one materialization of postgres/<database>/<step> in `result`."""
    key = names.database_key(database, step)
    (found,) = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == key
    ]
    return found


def failure_messages(result: ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    )


def run_restore_test_job(
    defs: Definitions, instance: DagsterInstance, databases=(), partition=None
) -> ExecuteInProcessResult:
    """The restore_test job for one day (default today), on the chosen databases (default all),
    as a launch of it in the UI would run."""
    job = defs.resolve_job_def(names.RESTORE_TEST_JOB)
    return job.execute_in_process(
        partition_key=partition or today(),
        asset_selection=[names.database_key(db, names.RESTORE_TEST) for db in databases] or None,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def record_check_evaluations(
    instance: DagsterInstance, key: AssetKey, checks: tuple[str, ...], day: str, passed: bool = True
) -> None:
    """Evaluations of `checks` on `key` for `day`, recorded as a run would (for history that
    no backup of today could make)."""
    for check in checks:
        instance.report_runless_asset_event(
            AssetCheckEvaluation(asset_key=key, check_name=check, passed=passed, partition=day)
        )


def metadata_number(value: object) -> float:
    """A number from metadata, whether shown as a figure or as text ('1,234')."""
    raw = getattr(value, "value", value)
    return float(str(raw).replace(",", "")) if isinstance(raw, str) else float(raw)


def restore_test_evaluations(result) -> dict[str, object]:
    return {
        event.asset_check_evaluation_data.asset_key.path[1]: event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def run_restore(defs, instance, **request):
    request = {"database": "agentic", **request}
    return defs.resolve_job_def("restore_database").execute_in_process(
        run_config={"ops": {"restore_from_archive": {"config": request}}},
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def materialize_runbook(defs, instance):
    result = materialize(
        assets=list(defs.assets or []),
        selection=[names.RECOVERY_RUNBOOK],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    return result


def alerts_tick(defs: Definitions, instance: DagsterInstance, cursor: str | None = None) -> str:
    """One tick of the alerts sensor, as the daemon runs it; returns its new cursor."""
    sensor = defs.resolve_sensor_def(names.ALERTS_SENSOR)
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
    ) as context:
        result = sensor.evaluate_tick(context)
    return result.cursor


def watching_since(hours: float) -> str:
    """An alerts cursor that has watched for `hours` (so older problems count as new)."""
    then = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat()
    return AlertState(watching_since=then, runs_after=then).to_cursor()


def check_evaluations(result: ExecuteInProcessResult) -> dict[str, AssetCheckEvaluation]:
    """The run's check evaluations by check name (a run of one asset)."""
    return {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }


def checks_by_name(result: ExecuteInProcessResult) -> dict[tuple[str, str], AssetCheckEvaluation]:
    """The run's check evaluations by (database, check name)."""
    return {
        (evaluation.asset_key.path[1], evaluation.check_name): evaluation
        for evaluation in result.get_asset_check_evaluations()
    }


def sensor_tick(defs: Definitions, instance: DagsterInstance, name: str, cursor: str | None):
    """One evaluation of sensor `name` from `cursor`: (its run requests, the new cursor)."""
    sensor = defs.resolve_sensor_def(name)
    context = build_sensor_context(
        instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
    )
    result = sensor.evaluate_tick(context)
    return result.run_requests or [], result.cursor
