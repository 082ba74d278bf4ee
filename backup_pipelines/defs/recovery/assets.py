"""The recovery runbook (how to restore each database when this service is down) and the audit
report (per database and day, what was backed up, checked and restore-tested)."""

import dataclasses
import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import BackupConfig, ConfigError
from backup_pipelines.core.common.layout import (
    AUDIT_CSV_KEY,
    AUDIT_EXPORTS_KEY,
    AUDIT_HTML_KEY,
    AUDIT_OBJECTIVES_KEY,
    AUDIT_RESTORE_POINTS_KEY,
    RUNBOOK_KEY,
)
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.recovery.config_runbook import config_runbook_entry
from backup_pipelines.core.recovery.runbook import (
    CheckLookup,
    RunbookEntry,
    ServerRunbookEntry,
    render_runbook,
    runbook_entry,
)
from backup_pipelines.core.recovery.timeline import PitrTestOutcome, ServerTimeline
from backup_pipelines.core.servers.pgbackrest import (
    BackupSet,
    PgBackRestError,
    repository_from_config,
)
from backup_pipelines.core.servers.restore_points import reachable_and_expired
from backup_pipelines.core.servers.window import archive_state_for
from backup_pipelines.defs.records import check_records, latest_check_record, verified_days
from backup_pipelines.defs.recovery.objectives import standings
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.servers.restore_points import recorded_restore_points
from backup_pipelines.defs.shared import readable
from backup_pipelines.storage import ObjectStore, StorageError

_TIMELINE_TESTS = 50  # the newest PITR restore tests drawn on a server's timeline


def database_runbook_entry(
    archive: ObjectStore, replica: ObjectStore | None, database: str, lookup: CheckLookup
) -> RunbookEntry:
    """The newest proved archive of `database`, and its newest proved copy in the replica."""
    entry = runbook_entry(archive, database, lookup)
    if replica is None:
        return entry
    try:
        second = runbook_entry(replica, database, lookup, from_replica=True)
    except StorageError:
        return entry
    return dataclasses.replace(entry, replica=second)


def server_runbook_entry(
    instance: DagsterInstance, settings: BackupSettings, server: str
) -> ServerRunbookEntry:
    """What the runbook says about `server`: read from its repository and its check history."""
    engine = settings.server_engine(server)
    key = names.server_key(server, names.PITR_RESTORE_TEST)
    tests = check_records(instance, key, names.PITR_RESTORE_PROVEN, limit=_TIMELINE_TESTS)
    pg_ctl = settings.client_tools().program("pg_ctl")
    newest_test = tests[0] if tests else None
    try:
        info = engine.info()
    except PgBackRestError as error:
        empty = ServerTimeline(None, [], [], [], {}, None)
        return ServerRunbookEntry(
            server, engine.stanza, engine.repository, pg_ctl, empty, newest_test, str(error)
        )
    connection = settings.server_connection(server)
    archive = archive_state_for(engine, info, connection)
    points, _ = reachable_and_expired(recorded_restore_points(instance, server), info.backups)
    timeline = ServerTimeline(
        archive.window,
        info.backups,
        points,
        [moment for test in tests if (moment := PitrTestOutcome.from_record(test))],
        {
            database: verified_days(instance, database)
            for database in settings.config().databases
            if _on_server(settings, database, server, connection.server)
        },
        archive.end_lsn,
    )
    second = (
        repository_from_config(settings.config(), server, only=names.SECOND_REPOSITORY)
        if engine.repository.count > 1
        else None
    )
    return ServerRunbookEntry(
        server, engine.stanza, engine.repository, pg_ctl, timeline, newest_test, None, second
    )


def _on_server(settings: BackupSettings, database: str, server: str, address: str) -> bool:
    """Is `database` one of `server`'s: named so (its `server:`), or at the same address?"""
    if settings.config().databases[database].server == server:
        return True
    try:
        return settings.database(database).connection.server == address
    except (ConfigError, PostgresError):
        return False


def restore_tests(config: BackupConfig) -> list[AssetKey]:
    """Every restore test the runbook reports: of each database and server, and the failover
    drills from the second copy (the replica store, each server's second repository)."""
    database_steps = [names.RESTORE_TEST, *([names.REPLICA_RESTORE_TEST] if config.replica else [])]
    return [
        *(names.database_key(db, step) for db in config.databases for step in database_steps),
        *(
            names.server_key(server, step)
            for server, settings in config.servers.items()
            for step in (
                [names.PITR_RESTORE_TEST, names.PITR_RESTORE_TEST_REPO2]
                if settings.pgbackrest.repo2
                else [names.PITR_RESTORE_TEST]
            )
        ),
    ]


def recovery_runbook_asset(
    databases: list[str], servers: list[str], tests: list[AssetKey]
) -> AssetsDefinition:
    @asset(
        key=names.RECOVERY_RUNBOOK,
        group_name=names.RECOVERY_GROUP,
        deps=tests,
        kinds={"html"},
        description="A self-contained HTML page next to the archives: per database the newest "
        "verified archive, its restore test, and how to restore it when this service is down; "
        "per server its recovery window and the pgBackRest commands to restore it to a moment.",
    )
    def recovery_runbook(
        context: AssetExecutionContext, settings: BackupSettings
    ) -> MaterializeResult:
        archive = settings.stores().archive

        def lookup(database: str, day: str, step: str, check: str) -> object:
            return latest_check_record(
                context.instance, names.database_key(database, step), check, day
            )

        replica, replica_problem = settings.usable_replica_store()
        entries = [
            database_runbook_entry(archive, replica, database, lookup) for database in databases
        ]
        server_entries = tuple(
            server_runbook_entry(context.instance, settings, server) for server in servers
        )
        now = dt.datetime.now(dt.UTC)
        covered = standings(context.instance, settings, now)
        configs = tuple(
            config_runbook_entry(archive, name) for name in settings.config().config_sources()
        )
        page = render_runbook(
            entries,
            generated_at=now,
            servers=server_entries,
            objectives=covered,
            configs=configs,
        )
        archive.write_bytes(RUNBOOK_KEY, page.encode())
        copies = {}
        if replica is not None:
            try:  # the day the primary store is gone, the runbook is there too
                replica.write_bytes(RUNBOOK_KEY, page.encode())
                copies["replica_uri"] = MetadataValue.url(replica.uri(RUNBOOK_KEY))
            except StorageError as error:
                replica_problem = str(error)
        if replica_problem:
            context.log.warning(f"the runbook has no replica section or copy: {replica_problem}")
            copies["replica_problem"] = replica_problem
        return MaterializeResult(
            metadata=readable(
                {
                    # A link in the UI (a file:// one for a local store: copy it where a
                    # browser will not follow it from a web page).
                    "uri": MetadataValue.url(archive.uri(RUNBOOK_KEY)),
                    **copies,
                    "databases_with_verified_archive": sum(e.manifest is not None for e in entries),
                    "databases_without_verified_archive": [
                        e.database for e in entries if e.manifest is None
                    ],
                    "restore_tested": [
                        e.database for e in entries if e.restore_test and e.restore_test.passed
                    ],
                    "servers_with_recovery_window": [
                        e.server for e in server_entries if e.timeline.window
                    ],
                }
            )
        )

    return recovery_runbook


def _kept_backups(settings: BackupSettings, server: str) -> list[BackupSet] | str:
    try:
        return settings.server_engine(server).info().backups
    except PgBackRestError as error:
        return f"the repository could not be read: {error}"


def audit_report_asset(
    databases: list[str], servers: list[str], tests: list[AssetKey]
) -> AssetsDefinition:
    @asset(
        key=names.AUDIT_REPORT,
        group_name=names.RECOVERY_GROUP,
        deps=tests,
        kinds={"pandas", "html"},
        description="Per database and day over the last audit.days: backup, archive, every "
        "check, restore test and retention decision, as CSV and HTML next to the archives.",
    )
    def audit_report(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        # pandas is imported here, by the one step that builds the report, not by every process
        # that loads the definitions.
        from backup_pipelines.defs.recovery.audit import (
            audit_table,
            coverage,
            exports_table,
            objectives_table,
            render_html,
            restore_points_table,
        )

        config, archive = settings.config(), settings.stores().archive
        last = dt.datetime.now(dt.UTC).date()
        first = max(config.start_date, last - dt.timedelta(days=config.audit.days - 1))
        table = audit_table(context.instance, databases, first, last)
        summary = coverage(table)
        period = f"{first} to {last}"
        points = restore_points_table(
            [p for server in servers for p in recorded_restore_points(context.instance, server)],
            {server: _kept_backups(settings, server) for server in servers},
        )
        archive.write_bytes(AUDIT_CSV_KEY, table.to_csv(index=False).encode())
        archive.write_bytes(AUDIT_RESTORE_POINTS_KEY, points.to_csv(index=False).encode())
        objectives = objectives_table(context.instance, first, last, dt.datetime.now(dt.UTC))
        archive.write_bytes(AUDIT_OBJECTIVES_KEY, objectives.to_csv(index=False).encode())
        exports = exports_table(context.instance, databases)
        archive.write_bytes(AUDIT_EXPORTS_KEY, exports.to_csv(index=False).encode())
        page = render_html(table, summary, period, points, objectives)
        archive.write_bytes(AUDIT_HTML_KEY, page.encode())
        return MaterializeResult(
            metadata={
                **summary,
                "period": period,
                "rows": len(table),
                "csv": MetadataValue.path(archive.uri(AUDIT_CSV_KEY)),
                "restore_points_csv": MetadataValue.path(archive.uri(AUDIT_RESTORE_POINTS_KEY)),
                "restore_points_expired": int(points["status"].str.startswith("expired").sum()),
                "objectives_csv": MetadataValue.path(archive.uri(AUDIT_OBJECTIVES_KEY)),
                "exports_csv": MetadataValue.path(archive.uri(AUDIT_EXPORTS_KEY)),
                "exports": len(exports),
                "objective_days_not_met": len(objectives) - int(objectives["met_all_day"].sum()),
                "html": MetadataValue.path(archive.uri(AUDIT_HTML_KEY)),
                "newest_rows": MetadataValue.text(table.tail(10).to_string(index=False)),
            }
        )

    return audit_report
