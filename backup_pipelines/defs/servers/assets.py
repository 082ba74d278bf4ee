"""Per server: pg_server/<server>/base_backup (pgBackRest full/diff by schedule, verified, WAL
continuity), globals (roles and tablespaces, for logical restores onto a new server) and
wal_archive (the continuous archive observed: lag, failures, the recovery window).

The backup logic is core/servers/ (base_backup.py, archiver.py, window.py, checks.py); this is
the Dagster wiring.
"""

import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.common.layout import globals_key
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.servers.archiver import archiver_status, repository_lag
from backup_pipelines.core.servers.base_backup import AUTO, take_base_backup
from backup_pipelines.core.servers.checks import (
    archive_lag,
    archiving_succeeds,
    backup_verified,
    wal_continuity,
)
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import Engine, PgBackRestError, RepositoryInfo
from backup_pipelines.core.servers.restore_points import reachable_and_expired
from backup_pipelines.core.servers.server_globals import dump_globals
from backup_pipelines.core.servers.window import observe_archive, recovery_spans, window_metadata
from backup_pipelines.dagster_private import cron_string_iterator
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.servers.restore_points import (
    recorded_restore_points,
    recovery_spans_table,
    restore_points_table,
)
from backup_pipelines.defs.shared import check_result, check_spec, per_day_check_spec, readable


class BaseBackupConfig(Config):
    """`auto`: full on the days servers.<server>.full_backup falls on (or when none exists),
    else differential. Or force `full`, `diff` or `incr`."""

    kind: str = AUTO


def full_backup_day(cron: str, day: str) -> bool:
    """Does `cron` (UTC) fire during `day`?"""
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
    first = next(cron_string_iterator(start.timestamp() - 1, cron, "UTC"))
    return first < start + dt.timedelta(days=1)


def _held_in(engine: Engine, repo: int) -> str:
    """The repository a step observes, as its checks name it."""
    if engine.repository.count == 1:
        return "the repository"
    return f"repository {repo} ({engine.repository.describe(repo)})"


def _fail(server: str, error: Exception) -> Failure:
    return Failure(str(error) if str(error).startswith("server") else f"server {server!r}: {error}")


def base_backup_asset(
    server: str, partitions: PartitionsDefinition, repo: int = 1
) -> AssetsDefinition:
    """The base backup in repository `repo` (2: pgbackrest.repo2, on its own schedule)."""
    key = names.server_key(server, names.repository_step(names.BASE_BACKUP, repo))
    where = " in its second repository (pgbackrest.repo2)" if repo > 1 else ""

    @asset(
        key=key,
        group_name=names.server_group(server),
        partitions_def=partitions,
        pool=names.BASE_BACKUP_POOL,
        kinds={"postgres", "pgbackrest"},
        description=f"A pgBackRest base backup of server {server}{where} (full on the days its "
        "full_backup schedule falls on, else differential). With the archived WAL it can be "
        "restored to any moment after it.",
        check_specs=[
            per_day_check_spec(
                names.BASE_BACKUP_VERIFIED,
                key,
                partitions,
                "pgbackrest verify read every file of the repository (checksums, sizes) and the "
                "new backup is listed.",
            ),
            per_day_check_spec(
                names.WAL_CONTINUOUS,
                key,
                partitions,
                "Every WAL segment from the oldest kept backup's start to the newest archived "
                "one is in the repository's listing (per timeline, following the history "
                "files): every moment in the window can be reached.",
            ),
        ],
    )
    def base_backup(
        context: AssetExecutionContext, config: BaseBackupConfig, settings: BackupSettings
    ) -> MaterializeResult:
        engine = settings.server_engine(server, repo=repo)
        full_today = full_backup_day(
            settings.config().servers[server].full_backup, context.partition_key
        )
        try:
            report = take_base_backup(
                engine,
                settings.server_connection(server),
                config.kind,
                full_today,
                context.log.info,
            )
        except (PgBackRestError, PostgresError, PitrError) as error:
            raise _fail(server, error) from None
        backup = report.backup
        return MaterializeResult(
            metadata=readable(
                {
                    "label": backup.label,
                    "kind": backup.kind,
                    "size_bytes": backup.database_bytes,
                    "repository_bytes": backup.repository_bytes,
                    "backup_seconds": round(backup.seconds, 1),
                    "verify_seconds": round(report.verify_seconds, 1),
                    "started": backup.started.isoformat(sep=" "),
                    "stopped": backup.stopped.isoformat(sep=" "),
                    "start_lsn": backup.start_lsn,
                    "stop_lsn": backup.stop_lsn,
                    "wal_start": backup.wal_start,
                    "wal_stop": backup.wal_stop,
                    "builds_on": backup.prior or "none (full)",
                    "repository": engine.repository.describe(repo),
                    **window_metadata(report.archive.window),
                }
            ),
            check_results=[
                check_result(backup_verified(server, backup, report.info, report.problems), key),
                check_result(
                    wal_continuity(server, report.archive.continuity, _held_in(engine, repo)),
                    key,
                ),
            ],
        )

    return base_backup


def globals_asset(server: str, partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=names.server_key(server, names.GLOBALS),
        group_name=names.server_group(server),
        partitions_def=partitions,
        kinds={"postgres"},
        description=f"Roles, memberships and tablespaces of server {server} (pg_dumpall "
        "--globals-only; role passwords only when the backup role may read them): restore them "
        "before a database's dump onto a new server, so no owner or grant is missing.",
    )
    def server_globals(
        context: AssetExecutionContext, settings: BackupSettings
    ) -> MaterializeResult:
        connection = settings.server_connection(server)
        store = settings.stores().dumps
        object_key = globals_key(server, context.partition_key)
        try:
            digest = store.write_chunks(
                object_key, dump_globals(connection, settings.client_tools())
            )
        except (PostgresError, PitrError) as error:
            raise _fail(server, error) from None
        return MaterializeResult(
            metadata=readable(
                {
                    "uri": MetadataValue.path(store.uri(object_key)),
                    "size_bytes": digest.size,
                    "sha256": digest.sha256,
                }
            )
        )

    return server_globals


def wal_archive_asset(server: str, repo: int = 1) -> AssetsDefinition:
    """The archive as repository `repo` holds it. With two repositories each is observed on
    its own (its lag from its own listing: pg_stat_archiver counts a segment archived only once
    both have it); archive_command's failures and the restore points are the server's, on
    repository 1's asset."""
    key = names.server_key(server, names.repository_step(names.WAL_ARCHIVE, repo))
    server_wide = repo == 1
    where = f"repository {repo} (pgbackrest.repo2)" if repo > 1 else "the repository"
    lag_from = (
        f"{where}'s newest segment and when it was stored"
        if repo > 1
        else "pg_stat_archiver (with repo2: repository 1's newest segment)"
    )
    checks = [
        check_spec(
            names.ARCHIVE_LAG,
            key,
            f"The newest WAL not yet in {where} is younger than archive_lag_alert_minutes "
            f"(from {lag_from}).",
        ),
        *(
            [
                check_spec(
                    names.ARCHIVING_SUCCEEDS,
                    key,
                    "The newest archive_command attempt succeeded (failures before the "
                    "repository's first segment or the last statistics reset are labelled as "
                    "such).",
                )
            ]
            if server_wide
            else []
        ),
        check_spec(
            names.WAL_CONTINUOUS,
            key,
            f"Every WAL segment from the oldest kept backup's start to the newest archived one "
            f"is in {where}'s listing: the window has no gap.",
        ),
    ]

    @asset(
        key=key,
        group_name=names.server_group(server),
        kinds={"postgres", "pgbackrest"},
        description=f"Server {server}'s continuous WAL archive in {where} as pg_stat_archiver "
        "and the repository show it: the last archived segment, the archive lag (the measured "
        "RPO), failed archive_command attempts, missing WAL segments and the recovery window "
        "(with a gap, the stretches that can be reached).",
        check_specs=checks,
    )
    def wal_archive(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        limit = settings.config().servers[server].archive_lag_alert_minutes
        try:
            status = archiver_status(settings.server_connection(server))
            engine = settings.server_engine(server, repo=repo)
            info = engine.info()
            archive = observe_archive(engine, info, status)
        except (PgBackRestError, PostgresError) as error:
            raise _fail(server, error) from None
        held_in = _held_in(engine, repo)
        two = engine.repository.count > 1
        lag = repository_lag(status, archive.continuity, held_in) if two else status.lag()
        window = archive.window
        outcomes = [
            archive_lag(server, lag, limit),
            *(
                [archiving_succeeds(server, status, archive.continuity.first_archived_at)]
                if server_wide
                else []
            ),
            wal_continuity(server, archive.continuity, held_in),
        ]
        return MaterializeResult(
            metadata=readable(
                {
                    "repository": engine.repository.describe(repo),
                    "archive_lag_seconds": round(lag.seconds, 1),
                    "last_archived_wal": lag.newest_wal or "none",
                    "archived_count": status.archived_count,
                    "failed_count": status.failed_count,
                    "wal_missing_segments": archive.continuity.missing,
                    **window_metadata(window),
                    "recovery_timeline": recovery_spans_table(recovery_spans(window, info.backups)),
                    **(_restore_points(context, server, info) if server_wide else {}),
                }
            ),
            check_results=[check_result(outcome, key) for outcome in outcomes],
        )

    return wal_archive


def _restore_points(
    context: AssetExecutionContext, server: str, info: RepositoryInfo
) -> dict[str, object]:
    points, _ = reachable_and_expired(
        recorded_restore_points(context.instance, server), info.backups
    )
    return {"restore_points": restore_points_table(points)}
