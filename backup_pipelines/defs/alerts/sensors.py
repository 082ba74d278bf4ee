"""Raise alerts: failed runs, failed checks, stale backups, overdue restore tests; announce each
once and its recovery once, and rewrite the Prometheus textfile. Reads records, sends messages,
does no heavy work."""

import datetime as dt

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import ServerConfig
from backup_pipelines.defs.alerts.health import (
    age_problems,
    check_problems,
    config_age_problems,
    failed_runs,
    replica_age_problems,
    server_age_problems,
)
from backup_pipelines.defs.alerts.metrics import (
    metric_values,
    objective_lines,
    render,
    write_textfile,
)
from backup_pipelines.defs.alerts.notifiers import notifiers_from_config
from backup_pipelines.defs.alerts.state import AlertState
from backup_pipelines.defs.resources import BackupSettings


def backup_alerts_sensor(
    databases: list[str], servers: dict[str, ServerConfig], configs: list[str]
) -> SensorDefinition:
    """Announce each problem once, and its recovery; rewrite the metrics textfile."""

    @sensor(
        name=names.ALERTS_SENSOR,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Failed runs, failed checks (archive lag, failed archiving among them), "
        "stale backups, base backups and configuration snapshots, overdue restore and PITR "
        "restore tests, sent to the configured webhook, Slack and email once each, with a "
        "recovery message.",
    )
    def _sensor(context: SensorEvaluationContext, settings: BackupSettings) -> SkipReason:
        alerts, replica = settings.config().alerts, settings.config().replica
        ui, now = alerts.ui_base_url, dt.datetime.now(dt.UTC)
        state = AlertState.from_cursor(context.cursor, now)
        runs, seen_until = failed_runs(
            context.instance, dt.datetime.fromisoformat(state.runs_after), ui
        )
        state.runs_after = seen_until.isoformat()
        watching_since = dt.datetime.fromisoformat(state.watching_since)
        restore_test_age = dt.timedelta(days=alerts.restore_test_max_age_days)
        # Ages are measured at `now`, and nothing is older than the time the sensor started.
        watch = {"now": now, "watching_since": watching_since, "ui": ui}
        problems = [
            *check_problems(
                context.instance,
                databases,
                list(servers),
                ui,
                replicated=replica is not None,
                configs=configs,
            ),
            *age_problems(
                context.instance,
                databases,
                freshness=dt.timedelta(hours=alerts.freshness_hours),
                restore_test_age=restore_test_age,
                **watch,
            ),
            *(
                replica_age_problems(
                    context.instance,
                    databases,
                    max_age=dt.timedelta(days=replica.max_age_days),
                    **watch,
                )
                if replica
                else ()
            ),
            *server_age_problems(
                context.instance, servers, restore_test_age=restore_test_age, **watch
            ),
            *config_age_problems(
                context.instance,
                configs,
                freshness=dt.timedelta(hours=alerts.freshness_hours),
                **watch,
            ),
            *runs,
        ]
        notifiers = notifiers_from_config(alerts)
        state.record(problems, now, [notifier.name for notifier in notifiers])
        for failure in state.deliver(notifiers):
            context.log.error(f"alert not delivered: {failure}")
        if alerts.metrics_textfile:
            values = metric_values(
                context.instance, databases, list(servers), replicated=replica is not None
            )
            extra = objective_lines(context.instance)
            write_textfile(alerts.metrics_textfile, render(values, len(state.open), extra))
        context.update_cursor(state.to_cursor())
        return SkipReason(
            f"{len(state.open)} open problems; {len(state.outbox)} alerts waiting for delivery"
        )

    return _sensor
