"""The server jobs: `server_backup` takes each server's base backup and globals for a day,
`observe_wal_archive` measures the archive, `pitr_restore_test` proves a restore to a moment,
and `restore_server` is the day of the disaster: a server back to time T."""

import socket
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetObservation,
    AssetSelection,
    Config,
    Failure,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.common.config import ConfigError
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.retention.prune import policy_for
from backup_pipelines.core.retention.servers import apply_expiry, plan_expiry
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import PgBackRestError, RecoveryTarget
from backup_pipelines.core.servers.restore import ServerRestoreRequest, restore_server
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.postgres.jobs import restore_audit_record, triggered_by
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.servers.restore_points import recorded_restore_points
from backup_pipelines.defs.shared import readable, require_configured


def _steps(servers: list[str], *steps: str) -> AssetSelection:
    return AssetSelection.assets(
        *(names.server_key(server, step) for server in servers for step in steps)
    )


def server_backup_job(servers: list[str], with_repo2: list[str]) -> AssetJob:
    """Each schedule's run selects one repository's steps (see server_schedules)."""
    return define_asset_job(
        names.SERVER_BACKUP_JOB,
        selection=_steps(servers, *names.SERVER_BACKUP_STEPS)
        | _steps(with_repo2, names.BASE_BACKUP_REPO2),
        description="Take each server's pgBackRest base backup (full or differential by its "
        "schedule), verify the repository and WAL continuity, and save its globals, for one day.",
    )


def wal_archive_job(servers: list[str], with_repo2: list[str]) -> AssetJob:
    return define_asset_job(
        names.WAL_ARCHIVE_JOB,
        selection=_steps(servers, names.WAL_ARCHIVE) | _steps(with_repo2, names.WAL_ARCHIVE_REPO2),
        description="Measure each server's WAL archive, in each repository: lag (the RPO), "
        "failures, recovery window.",
    )


def pitr_restore_test_job(servers: list[str], with_repo2: list[str]) -> AssetJob:
    return define_asset_job(
        names.PITR_RESTORE_TEST_JOB,
        selection=_steps(servers, names.PITR_RESTORE_TEST)
        | _steps(with_repo2, names.PITR_RESTORE_TEST_REPO2),
        description="Restore each selected server to a moment on a scratch port and prove it.",
    )


class RestoreServerRequest(Config):
    server: str = Field(description="The configured server to restore.")
    target_time: str | None = Field(
        default=None,
        description="Recover to this moment (ISO 8601 with a time zone, e.g. "
        "'2026-12-01 01:58:00+00:00'). Give at most one of target_time and restore_point; "
        "neither: the latest archived WAL.",
    )
    restore_point: str | None = Field(
        default=None, description="Recover to this named restore point (pg_create_restore_point)."
    )
    data_directory: str = Field(
        description="Where to restore: a new folder, or a stopped cluster's with confirm_overwrite."
    )
    port: int | None = Field(
        default=None, description="Start the restored server on this port; unset: leave it stopped."
    )
    confirm_overwrite: str = Field(
        default="",
        description="The server's name, to restore over a stopped cluster's non-empty folder. "
        "A running cluster is never overwritten.",
    )
    repository: int = Field(
        default=1,
        ge=1,
        le=2,
        description="The pgBackRest repository to restore from: 2 is pgbackrest.repo2, used "
        "with its own settings and credentials alone (for the day repository 1 is gone).",
    )


def _target(config: RestoreServerRequest) -> RecoveryTarget:
    if config.target_time and config.restore_point:
        raise Failure(
            f"restore_server {config.server!r}: give target_time or restore_point, not both"
        )
    if config.target_time:
        return RecoveryTarget("time", config.target_time)
    if config.restore_point:
        return RecoveryTarget("name", config.restore_point)
    return RecoveryTarget("latest")


def _recorded_lsn(context: OpExecutionContext, config: RestoreServerRequest) -> str | None:
    """Where the named target was made, if create_restore_point recorded it (a point made by
    other means is left to pgBackRest)."""
    if not config.restore_point:
        return None
    recorded = recorded_restore_points(context.instance, config.server)
    return next((p.lsn for p in reversed(recorded) if p.name == config.restore_point), None)


@op(out={}, description="Restore a server with pgBackRest to a moment, recorded as an audit event.")
def restore_server_to_target(
    context: OpExecutionContext, config: RestoreServerRequest, settings: BackupSettings
) -> Iterator[AssetObservation]:
    require_configured(names.RESTORE_SERVER_JOB, "server", config.server, settings.config().servers)
    target = _target(config)
    base_backups = names.server_key(config.server, names.BASE_BACKUP)
    audit: dict[str, object] = {
        "event": "restore",
        "triggered_by": triggered_by(context.run.tags),
        "run_id": context.run_id,
        "run_host": socket.gethostname(),
        "target": target.describe(),
        "data_directory": config.data_directory,
        "port": str(config.port) if config.port else "not started",
        "repository": str(config.repository),
    }
    request = ServerRestoreRequest(
        target,
        Path(config.data_directory),
        config.port,
        config.confirm_overwrite or None,
        _recorded_lsn(context, config),
    )
    try:
        outcome = restore_server(
            settings.server_engine(
                config.server, repo=config.repository, alone=config.repository != 1
            ),
            settings.server_connection(config.server),
            request,
            settings.config().pg_bin_dir,
        )
    except (PgBackRestError, PostgresError, PitrError, ConfigError) as error:
        yield restore_audit_record(base_backups, None, {**audit, "outcome": f"failed: {error}"})
        raise Failure(str(error)) from None
    backup = outcome.backup
    yield restore_audit_record(
        base_backups,
        backup.stopped.date().isoformat() if backup else None,
        {
            **audit,
            "outcome": "restored and promoted" if config.port else "restored (not started)",
            "restored_from_backup": backup.label if backup else "?",
            "restore_seconds": round(outcome.seconds, 3),
        },
    )


@job(
    name=names.RESTORE_SERVER_JOB,
    description="Restore a whole server with pgBackRest to a time, a named restore point or the "
    "latest WAL, into a new folder (or a stopped cluster's, confirmed by name), optionally "
    "started on a port. Every restore is an audit event on pg_server/<server>/base_backup.",
)
def restore_server_job() -> None:
    restore_server_to_target()


class ExpireRequest(Config):
    dry_run: bool | None = Field(
        default=None, description="Plan only; default: retention.dry_run from the configuration."
    )


@op(out={}, description="Expire the full backups each server's policy no longer keeps.")
def expire_server_backups(
    config: ExpireRequest, settings: BackupSettings
) -> Iterator[AssetObservation]:
    backup_config = settings.config()
    dry_run = backup_config.retention.dry_run if config.dry_run is None else config.dry_run
    for server in backup_config.servers:
        yield from _expire_repositories(settings, server, dry_run)


def _expire_repositories(
    settings: BackupSettings, server: str, dry_run: bool
) -> Iterator[AssetObservation]:
    """Each repository of `server` by the same policy, each judged by its own backups."""
    policy = policy_for(settings.config().server_retention_for(server))
    for repo in range(1, settings.server_engine(server).repository.count + 1):
        engine = settings.server_engine(server, repo=repo)
        try:
            plan = plan_expiry(engine, policy)
            removed = [] if dry_run else apply_expiry(engine, plan)
        except PgBackRestError as error:
            raise Failure(str(error)) from None
        yield AssetObservation(
            asset_key=names.server_key(server, names.repository_step(names.BASE_BACKUP, repo)),
            description=f"retention {'plan (dry run)' if dry_run else 'applied'}: "
            f"{len(plan.expire)} full backups to expire, {len(plan.keep)} kept",
            metadata=readable(
                {
                    "event": "retention",
                    "dry_run": dry_run,
                    "kept": [f"{label}: {'; '.join(why)}" for label, why in plan.keep.items()],
                    "expired" if not dry_run else "would_expire": [
                        f"{label}: {why}" for label, why in plan.expire.items()
                    ],
                    "pgbackrest_plan": plan.engine_says,
                    "pgbackrest_removed": removed,
                }
            ),
        )


@job(
    name=names.PRUNE_SERVERS_JOB,
    description="Apply each server's retention policy (GFS over its full backups) with "
    "pgbackrest expire: the plan first (pgBackRest's own dry run, recorded on "
    "pg_server/<server>/base_backup), then exactly that. Only pgBackRest deletes.",
)
def prune_server_backups_job() -> None:
    expire_server_backups()
