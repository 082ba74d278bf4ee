"""Sensors: restore-test new archives (when configured), keep the recovery runbook current,
plan retention, and raise alerts. They read storage listings and Dagster's records, request
runs and send messages; none does heavy work."""

import datetime as dt
import hashlib
import json

from dagster import (
    AssetRecordsFilter,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from backup_pipelines.alerts import AlertState
from backup_pipelines.assets import asset_key
from backup_pipelines.health import age_problems, check_problems, failed_runs
from backup_pipelines.metrics import metric_values, render, write_textfile
from backup_pipelines.notifiers import notifiers_from_config
from backup_pipelines.prune_jobs import plan_all, prune_run_config
from backup_pipelines.records import latest_check_record_id, latest_materialization_id
from backup_pipelines.resources import BackupSettings
from backup_pipelines.restore_jobs import restore_test_run_config
from backup_pipelines.restore_test import RESTORE_TEST_CHECK

_BATCH = 100


def new_archive_restore_test_sensor(
    databases: list[str], job: JobDefinition, enabled: bool
) -> SensorDefinition:
    """Restore-test every newly verified archive (config: restore_test.test_each_new_archive)."""

    @sensor(
        name="restore_test_new_archives_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        description="Requests a restore_test run for each new verification of an archive.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult:
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        new: dict[str, list[tuple[str, int]]] = {}  # day -> (database, storage id)
        for database in databases:
            key = asset_key(database, "verification")
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
            RunRequest(
                run_key=f"restore_test_{day}_" + "_".join(f"{db}-{sid}" for db, sid in found),
                run_config=restore_test_run_config(sorted({db for db, _ in found}), day),
            )
            for day, found in sorted(new.items())
        ]
        return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return _sensor


def recovery_runbook_sensor(
    databases: list[str], job: UnresolvedAssetJobDefinition
) -> SensorDefinition:
    """Regenerate the runbook after every verification and every restore test."""

    @sensor(
        name="recovery_runbook_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Rewrites the recovery runbook when an archive is verified or restore-tested.",
    )
    def _sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        state = []
        for database in databases:
            key = asset_key(database, "verification")
            state.append(latest_materialization_id(context.instance, key))
            state.append(latest_check_record_id(context.instance, key, RESTORE_TEST_CHECK))
        fingerprint = ",".join(map(str, state))
        if fingerprint == context.cursor:
            return SkipReason("no archive verified or restore-tested since the last runbook")
        context.update_cursor(fingerprint)
        return RunRequest(run_key=f"recovery_runbook_{fingerprint}")

    return _sensor


def retention_sensor(job: JobDefinition) -> SensorDefinition:
    """Plan retention from what storage holds; launch prune_backups when something expired."""

    @sensor(
        name="retention_sensor",
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
            return SkipReason(f"nothing expired; {kept} backups kept in {len(plans)} databases")
        run_config = prune_run_config(settings, plans, settings.config().retention.dry_run)
        digest = hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()
        return RunRequest(run_key=f"prune_{digest[:16]}", run_config=run_config)

    return _sensor


def backup_alerts_sensor(databases: list[str]) -> SensorDefinition:
    """Announce each problem once, and its recovery; rewrite the metrics textfile."""

    @sensor(
        name="backup_alerts_sensor",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Failed runs, failed checks, stale backups and overdue restore tests, sent "
        "to the configured webhook, Slack and email once each, with a recovery message.",
    )
    def _sensor(context: SensorEvaluationContext, settings: BackupSettings) -> SkipReason:
        alerts = settings.config().alerts
        ui, now = alerts.ui_base_url, dt.datetime.now(dt.UTC)
        state = AlertState.from_cursor(context.cursor, now)
        runs, seen_until = failed_runs(
            context.instance, dt.datetime.fromisoformat(state.runs_after), ui
        )
        state.runs_after = seen_until.isoformat()
        problems = [
            *check_problems(context.instance, databases, ui),
            *age_problems(
                context.instance,
                databases,
                now=now,
                watching_since=dt.datetime.fromisoformat(state.watching_since),
                freshness=dt.timedelta(hours=alerts.freshness_hours),
                restore_test_age=dt.timedelta(days=alerts.restore_test_max_age_days),
                ui=ui,
            ),
            *runs,
        ]
        notifiers = notifiers_from_config(alerts)
        state.record(problems, now, [notifier.name for notifier in notifiers])
        for failure in state.deliver(notifiers):
            context.log.error(f"alert not delivered: {failure}")
        if alerts.metrics_textfile:
            values = metric_values(context.instance, databases)
            write_textfile(alerts.metrics_textfile, render(values, len(state.open)))
        context.update_cursor(state.to_cursor())
        return SkipReason(
            f"{len(state.open)} open problems; {len(state.outbox)} alerts waiting for delivery"
        )

    return _sensor
