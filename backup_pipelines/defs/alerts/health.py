"""What is wrong right now, read from Dagster's records: failed checks, stale backups, overdue
restore tests, failed runs. Each problem has a stable key, so it is one problem however often
it is looked at, and it clears when its condition does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import ServerConfig, longest_cron_interval
from backup_pipelines.defs.records import (
    check_history,
    evaluated_at,
    newest_verified_day,
    verification_outcomes,
)

STORAGE_CHECK = (names.key(names.STORAGE_USAGE), names.STORAGE_CAPACITY)
OBJECTIVE_CHECKS = [
    (names.key(names.RECOVERY_OBJECTIVES), check) for check in names.OBJECTIVE_CHECKS.values()
]
_ERROR_LINES = 3
_ASSETS_NAMED = 4  # in a failed run's title; the link shows the rest
# A failover drill is overdue once a scheduled one was missed: the longest gap between two of
# its runs, and a day.
_GRACE = dt.timedelta(days=1)


@dataclass(frozen=True)
class Problem:
    key: str  # stable identity, e.g. "check:agentic:archive_checksum"
    title: str
    details: str
    link: str
    recovers: bool = True  # False for events (a failed run), which are announced once


def asset_link(ui: str, key: AssetKey) -> str:
    return f"{ui.rstrip('/')}/assets/{'/'.join(key.path)}"


def check_problems(
    instance: DagsterInstance,
    databases: list[str],
    servers: list[str],
    ui: str,
    *,
    replicated: bool = False,
    configs: list[str] | None = None,
) -> Iterator[Problem]:
    database_checks = {**names.DATABASE_CHECKS, **(names.REPLICA_CHECKS if replicated else {})}
    watched = [
        *(
            (names.database_key(db, step), check)
            for db in databases
            for step, checks in database_checks.items()
            for check in checks
        ),
        *(
            (names.server_key(server, step), check)
            for server in servers
            for step, checks in names.SERVER_CHECKS.items()
            for check in checks
        ),
        *(
            (names.config_key(source), check)
            for source in configs or ()
            for check in names.CONFIG_CHECKS
        ),
    ]
    for key, check in [*watched, STORAGE_CHECK, *OBJECTIVE_CHECKS]:
        history = check_history(instance, key, check)
        evaluation = history[0].evaluation if history else None
        if evaluation is None or evaluation.passed:
            continue
        day = f" for {evaluation.partition}" if evaluation.partition else ""
        if key == STORAGE_CHECK[0]:
            subject = "storage"
        else:  # a database's or server's name; the objectives' own asset key
            subject = key.path[1] if len(key.path) > 1 else key.path[0]
        yield Problem(
            key=f"check:{'/'.join(key.path)}:{check}",
            title=f"{subject}: check {check} failed ({evaluation.severity.value}){day}",
            details=evaluation.description or "",
            link=asset_link(ui, key),
        )


def last_verified_at(instance: DagsterInstance, database: str) -> dt.datetime | None:
    """When an archive of `database` was last verified (both integrity checks passed)."""
    key = names.database_key(database, names.VERIFICATION)
    verified = verification_outcomes(instance, key, names.VERIFYING_CHECKS)
    last_check = names.VERIFYING_CHECKS[-1]
    for record in check_history(instance, key, last_check, limit=50, passed_only=True):
        if verified.get(record.partition or ""):
            return evaluated_at(record)
    return None


def last_restore_test(instance: DagsterInstance, database: str):
    """The newest finished restore-test evaluation of `database` (any day), or None."""
    key = names.database_key(database, names.RESTORE_TEST)
    history = check_history(instance, key, names.RESTORED_DATA_MATCHES)
    return history[0] if history else None


def age_problems(
    instance: DagsterInstance,
    databases: list[str],
    *,
    now: dt.datetime,
    watching_since: dt.datetime,
    freshness: dt.timedelta,
    restore_test_age: dt.timedelta,
    ui: str,
) -> Iterator[Problem]:
    """Stale backups and overdue restore tests, also when nothing ran at all."""
    for database in databases:
        key = names.database_key(database, names.VERIFICATION)
        link = asset_link(ui, key)
        yield from _stale(
            f"stale:{database}",
            f"{database}: no verified backup",
            f"The newest verified archive of {database}",
            last_verified_at(instance, database),
            (now, watching_since, freshness),
            names.DAILY_BACKUP_SCHEDULE,
            link,
        )
        restore_test = names.database_key(database, names.RESTORE_TEST)
        tested = check_history(
            instance, restore_test, names.RESTORED_DATA_MATCHES, passed_only=True
        )
        tested_at = evaluated_at(tested[0]) if tested else None
        if now - (tested_at or watching_since) > restore_test_age:
            yield Problem(
                key=f"restore_test_overdue:{database}",
                title=f"{database}: no passed restore test for "
                f"{_hours(now - (tested_at or watching_since))} (limit {_hours(restore_test_age)})",
                details=f"Run job {names.RESTORE_TEST_JOB}, or check "
                f"{names.WEEKLY_RESTORE_TEST_SCHEDULE}.",
                link=asset_link(ui, restore_test),
            )


def config_age_problems(
    instance: DagsterInstance,
    sources: list[str],
    *,
    now: dt.datetime,
    watching_since: dt.datetime,
    freshness: dt.timedelta,
    ui: str,
) -> Iterator[Problem]:
    """Configuration sources without a snapshot read back intact within `freshness`."""
    for source in sources:
        key = names.config_key(source)
        good = check_history(instance, key, names.CONFIG_READBACK, passed_only=True)
        yield from _stale(
            f"config_stale:{source}",
            f"config {source}: no verified configuration snapshot",
            f"The newest snapshot of {source} that read back intact",
            evaluated_at(good[0]) if good else None,
            (now, watching_since, freshness),
            names.CONFIG_BACKUP_SCHEDULE,
            asset_link(ui, key),
        )


def _stale(
    key: str,
    title: str,
    newest: str,
    last: dt.datetime | None,
    watch: tuple[dt.datetime, dt.datetime, dt.timedelta],
    schedule: str,
    link: str,
) -> Iterator[Problem]:
    """A problem when `last` (else the time watching began) is older than the limit:
    `watch` is (now, watching since, limit)."""
    now, watching_since, limit = watch
    since = last or watching_since
    if now - since <= limit:
        return
    what = f"since {last:%Y-%m-%d %H:%M} UTC" if last else "ever (none recorded)"
    yield Problem(
        key=key,
        title=f"{title} for {_hours(now - since)} (limit {_hours(limit)})",
        details=f"{newest}: {what}. Check that {schedule} is running and the daemon is up.",
        link=link,
    )


def last_replicated_at(instance: DagsterInstance, database: str) -> dt.datetime | None:
    """When a copy of `database` in the replica store was last proved."""
    key = names.database_key(database, names.REPLICA)
    proved = check_history(instance, key, names.REPLICA_VERIFIED, passed_only=True)
    return evaluated_at(proved[0]) if proved else None


def replica_lag_days(instance: DagsterInstance, database: str) -> int | None:
    """How many days the newest proved replica is behind the newest verified archive (None:
    nothing verified yet)."""
    verified = newest_verified_day(instance, database)
    if verified is None:
        return None
    replicated = newest_verified_day(instance, database, names.REPLICA)
    if replicated is None:
        return None
    return (dt.date.fromisoformat(verified) - dt.date.fromisoformat(replicated)).days


def replica_age_problems(
    instance: DagsterInstance,
    databases: list[str],
    *,
    now: dt.datetime,
    watching_since: dt.datetime,
    max_age: dt.timedelta,
    ui: str,
) -> Iterator[Problem]:
    """Databases whose second copy is missing or older than `max_age`."""
    for database in databases:
        replicated = last_replicated_at(instance, database)
        since = replicated or watching_since
        if now - since <= max_age:
            continue
        newest = newest_verified_day(instance, database, names.REPLICA)
        verified = newest_verified_day(instance, database)
        key = names.database_key(database, names.REPLICA)
        yield Problem(
            key=f"replica_stale:{database}",
            title=f"{database}: no proved copy in the replica store for {_hours(now - since)} "
            f"(limit {_hours(max_age)})",
            details=f"Newest proved replica: {newest or 'none'}; newest verified archive: "
            f"{verified or 'none'}. Check the replica's check history and "
            f"{names.NEW_ARCHIVE_REPLICA_SENSOR}; run job {names.REPLICATE_JOB} for the "
            "missing days.",
            link=asset_link(ui, key),
        )


def server_age_problems(
    instance: DagsterInstance,
    servers: dict[str, ServerConfig],
    *,
    now: dt.datetime,
    watching_since: dt.datetime,
    restore_test_age: dt.timedelta,
    ui: str,
) -> Iterator[Problem]:
    """Servers without a recent verified base backup or a recent passed PITR restore test, in
    each repository: the second's drill is due once per its (monthly) schedule."""
    for server, settings in servers.items():
        repositories = [1, names.SECOND_REPOSITORY] if settings.pgbackrest.repo2 else [1]
        for repo in repositories:
            yield from _stale_base_backup(instance, server, settings, repo, now, watching_since, ui)
            limit = (
                restore_test_age
                if repo == 1
                else longest_cron_interval(settings.restore_test.repo2_schedule) + _GRACE
            )
            yield from _overdue_pitr_test(instance, server, repo, limit, now, watching_since, ui)


def _stale_base_backup(
    instance: DagsterInstance,
    server: str,
    settings: ServerConfig,
    repo: int,
    now: dt.datetime,
    watching_since: dt.datetime,
    ui: str,
) -> Iterator[Problem]:
    key = names.server_key(server, names.repository_step(names.BASE_BACKUP, repo))
    backups = check_history(instance, key, names.BASE_BACKUP_VERIFIED, passed_only=True)
    since = evaluated_at(backups[0]) if backups else watching_since
    limit = dt.timedelta(days=settings.base_backup_max_age_days)
    if now - since <= limit:
        return
    first = repo == 1
    yield Problem(
        key=f"base_backup_stale:{server}" + ("" if first else f":repo{repo}"),
        title=f"{server}: no verified base backup{'' if first else f' in repository {repo}'} "
        f"for {_hours(now - since)} (limit {_hours(limit)})",
        details=f"Check "
        f"{names.server_backup_schedule(server) if first else names.repo2_backup_schedule(server)}"
        " and the daemon; a PITR restore replays all WAL since the newest base backup, so the "
        "RTO grows.",
        link=asset_link(ui, key),
    )


def _overdue_pitr_test(
    instance: DagsterInstance,
    server: str,
    repo: int,
    limit: dt.timedelta,
    now: dt.datetime,
    watching_since: dt.datetime,
    ui: str,
) -> Iterator[Problem]:
    key = names.server_key(server, names.repository_step(names.PITR_RESTORE_TEST, repo))
    tested = check_history(instance, key, names.PITR_RESTORE_PROVEN, passed_only=True)
    tested_at = evaluated_at(tested[0]) if tested else watching_since
    if now - tested_at <= limit:
        return
    first = repo == 1
    what = "PITR restore test" if first else f"failover drill (PITR restore from repository {repo})"
    schedule = (
        names.pitr_restore_test_schedule(server) if first else names.repo2_drill_schedule(server)
    )
    yield Problem(
        key=f"pitr_restore_test_overdue:{server}" + ("" if first else f":repo{repo}"),
        title=f"{server}: no passed {what} for {_hours(now - tested_at)} (limit {_hours(limit)})",
        details=f"Run job {names.PITR_RESTORE_TEST_JOB}, or check {schedule}.",
        link=asset_link(ui, key),
    )


def failed_runs(
    instance: DagsterInstance, after: dt.datetime, ui: str
) -> tuple[list[Problem], dt.datetime]:
    """Runs that failed since `after`, as one-off problems; and the newest time seen."""
    records = instance.get_run_records(
        filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=after),
        order_by="update_timestamp",
        ascending=True,
        limit=100,
    )
    problems, newest = [], after
    for record in records:
        run = record.dagster_run
        newest = max(newest, record.update_timestamp.astimezone(dt.UTC))
        steps = [
            (event.dagster_event.step_key or "?", event.dagster_event.step_failure_data.error)
            for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
            if event.dagster_event and event.dagster_event.step_failure_data
        ]
        lines = [f"{step}: {_root_cause(error)}" for step, error in steps] or [
            "the run failed outside its steps (see the run's logs)"
        ]
        day = run.tags.get("dagster/partition")
        problems.append(
            Problem(
                key=f"run:{run.run_id}",
                title=f"run of {_what_ran(instance, run)} failed"
                + (f" for {day}" if day else "")
                + f" ({', '.join(sorted({_database_of(step) for step, _ in steps} - {''}))})",
                details="\n".join(lines),
                link=f"{ui.rstrip('/')}/runs/{run.run_id}",
                recovers=False,
            )
        )
    return problems, newest


def _what_ran(instance: DagsterInstance, run: DagsterRun) -> str:
    """The job's name, or for Dagster's internal jobs (a UI materialization, `__ASSET_JOB`) the
    assets it ran (else those it planned and did not materialize), which is what the reader
    knows them by."""
    if not run.job_name.startswith("__"):
        return run.job_name
    keys = sorted(key.to_user_string() for key in run.asset_selection or ())
    keys = keys or sorted(_unmaterialized(instance, run.run_id))
    more = f" and {len(keys) - _ASSETS_NAMED} more" if len(keys) > _ASSETS_NAMED else ""
    return ", ".join(keys[:_ASSETS_NAMED]) + more if keys else "an asset run"


def _unmaterialized(instance: DagsterInstance, run_id: str) -> set[str]:
    planned_type = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    planned, done = set(), set()
    for record in instance.all_logs(
        run_id, of_type={planned_type, DagsterEventType.ASSET_MATERIALIZATION}
    ):
        event = record.dagster_event
        if event and event.asset_key:
            (planned if event.event_type == planned_type else done).add(
                event.asset_key.to_user_string()
            )
    return planned - done


def _database_of(step_key: str) -> str:
    if step_key.startswith((f"{names.DATABASE_PREFIX}__", f"{names.SERVER_PREFIX}__")):
        return step_key.split("__")[1]
    if "[" in step_key:
        return step_key.split("[", 1)[1].rstrip("]")
    return ""


def _root_cause(error) -> str:
    """The first lines of the innermost error: the one our code raised, not Dagster's wrapper."""
    if error is None:
        return "no error recorded"
    while error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines()[:_ERROR_LINES]
    return " / ".join(line.strip() for line in lines)


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"
