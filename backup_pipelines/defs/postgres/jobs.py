"""The database jobs: `daily_backup` takes, archives and verifies every backup of a day;
`restore_test` proves a day's archives restore; `restore_database` is for the day of the
disaster. Thin wiring over core/postgres/restore.py.
"""

import datetime as dt
import os
import socket
from collections.abc import Iterator

from dagster import (
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.common.config import expand_env
from backup_pipelines.core.common.encryption import EncryptionError
from backup_pipelines.core.common.postgres_client import Connection, PostgresError
from backup_pipelines.core.postgres.restore import RestoreError, archive_manifest
from backup_pipelines.core.postgres.restore_database import DatabaseRestoreRequest, restore_archive
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import require_configured

_TRIGGER_TAGS = (
    ("dagster/schedule_name", "schedule"),
    ("dagster/sensor_name", "sensor"),
    ("dagster/backfill", "backfill"),
    ("dagster/user", "user"),
    ("backup_pipelines/triggered_by", "submitted by"),
)


def daily_backup_job(apart: list[AssetsDefinition], replica_steps: list[AssetKey]) -> AssetJob:
    """Partitioned like the assets it selects (one run per day); not the assets `apart` (the
    restore tests and the exports, which run on their own)."""
    return define_asset_job(
        names.DAILY_BACKUP_JOB,
        # Restore tests run on their own (weekly, or per new archive when configured), and the
        # replica after each verification: a backup never waits for the second copy.
        selection=AssetSelection.key_prefixes([names.DATABASE_PREFIX], [names.BUCKET_PREFIX])
        - AssetSelection.assets(*apart)
        - AssetSelection.assets(*replica_steps),
        description="Dump, archive and verify every configured database, and snapshot and "
        "verify every configured bucket, for one day.",
        # A database's chain is one step; an automatic retry (the run worker was lost) redoes
        # only the assets the failed run did not materialize, never a dump it already took.
        tags={"dagster/retry_strategy": "FROM_ASSET_FAILURE"},
    )


def restore_test_job(restore_tests: list[AssetsDefinition]) -> AssetJob:
    """One run per day tested; a run (or a schedule's request) may select some databases."""
    return define_asset_job(
        names.RESTORE_TEST_JOB,
        selection=AssetSelection.assets(*restore_tests),
        description="Restore each selected database's archive of the day into a throw-away "
        "database and prove it (postgres/<db>/restore_test).",
    )


def per_day_requests(
    databases_by_day: dict[str, list[str]], run_key: str, step: str = names.RESTORE_TEST
) -> list[RunRequest]:
    """One run per day, selecting `step` (a restore test by default) of that day's databases."""
    return [
        RunRequest(
            run_key=f"{run_key}_{day}",
            partition_key=day,
            asset_selection=[names.database_key(db, step) for db in sorted(found)],
        )
        for day, found in sorted(databases_by_day.items())
    ]


class RestoreJobRequest(Config):
    database: str = Field(description="The configured database whose archive to restore.")
    partition: str | None = Field(
        default=None, description="Day (YYYY-MM-DD) of the archive; default: the newest."
    )
    target_url: str = Field(
        description="libpq URL of the target server (any database on it, e.g. /postgres). "
        "Write a password as ${VAR}: it is read from the run's environment, never stored."
    )
    target_database: str | None = Field(
        default=None, description="Database to restore into; default <database>_restored_<day>."
    )
    replace_existing: bool = Field(
        default=False,
        description="Restore over an existing database (pg_restore --clean --if-exists, in one "
        "transaction). Requires confirm.",
    )
    confirm: str = Field(
        default="", description="Must equal target_database when replace_existing is set."
    )
    allow_checksum_mismatch: bool = Field(
        default=False, description="Restore even if the archive fails its checksum."
    )
    no_owner: bool = Field(
        default=False, description="Skip ownership and grants (when the roles do not exist)."
    )
    jobs: int = Field(default=2, ge=1, le=64, description="pg_restore --jobs for a new database.")
    from_replica: bool = Field(
        default=False,
        description="Restore the copy in the replica store (replica:), reading nothing from "
        "the primary store: for the day the primary store is gone.",
    )


@op(out={}, description="Restore one archive into a target server, recorded as an audit event.")
def restore_from_archive(
    context: OpExecutionContext, config: RestoreJobRequest, settings: BackupSettings
) -> Iterator[AssetObservation]:
    configured = settings.config().databases
    require_configured(names.RESTORE_DATABASE_JOB, "database", config.database, configured)
    target = _target_connection(config)
    if config.from_replica and settings.config().replica is None:
        raise Failure("restore_database: from_replica is set, but replica: is not configured")
    archive = settings.replica_store() if config.from_replica else settings.stores().archive
    archive_key = names.database_key(
        config.database, names.REPLICA if config.from_replica else names.ARCHIVE
    )
    audit: dict[str, object] = {
        "event": "restore",
        "triggered_by": triggered_by(context.run.tags),
        "run_id": context.run_id,
        "run_host": socket.gethostname(),
        "target_server": target.server,
        "requested_day": config.partition or "newest",
    }
    day = None
    try:
        manifest = archive_manifest(archive, config.database, config.partition)
        day = manifest.partition
        target_database = (
            config.target_database or f"{config.database}_restored_{day.replace('-', '')}"
        )
        audit.update(
            source_archive=MetadataValue.path(archive.uri(manifest.object_key)),
            source_sha256=manifest.sha256,
            target_database=target_database,
            replace_existing=config.replace_existing,
        )
        result = restore_archive(
            archive,
            manifest,
            DatabaseRestoreRequest(
                target=target,
                target_database=target_database,
                replace_existing=config.replace_existing,
                confirm=config.confirm,
                allow_checksum_mismatch=config.allow_checksum_mismatch,
                jobs=config.jobs,
                no_owner=config.no_owner,
            ),
            pg_bin_dir=settings.config().pg_bin_dir,
            scratch_dir=settings.restore_test_settings(config.database).scratch_dir,
            assertions=configured[config.database].restore_assertions,
            key=settings.archive_key(),
        )
    except (RestoreError, PostgresError, EncryptionError) as error:
        yield restore_audit_record(archive_key, day, {**audit, "outcome": f"failed: {error}"})
        raise Failure(str(error)) from None
    validation = result.validation
    outcome = "restored" if validation.passed else "restored, but differs from the backup"
    yield restore_audit_record(
        archive_key,
        day,
        {
            **audit,
            "outcome": outcome,
            "restore_seconds": round(result.fetch_seconds + result.restore_seconds, 3),
            "checksum_problem": result.checksum_problem or "none",
            **validation.metadata(),
        },
    )
    if not validation.passed:
        raise Failure(
            f"{config.database} ({day}) was restored into {result.target_database!r} but differs "
            f"from the backup: {'; '.join(validation.mismatches[:10])}"
        )


def _target_connection(config: RestoreJobRequest) -> Connection:
    try:
        literal = Connection.from_url(config.database, config.target_url).password
        if literal is not None and "${" not in literal:
            raise Failure(
                "restore_database: target_url holds a password, and run config is stored and "
                "shown in the UI; write it as ${VAR} and set VAR in the environment of the run"
            )
        return Connection.from_url(config.database, expand_env(config.target_url, "target_url"))
    except PostgresError as error:
        raise Failure(f"restore_database: target_url: {error}") from None


def triggered_by(tags: dict[str, str]) -> str:
    for tag, label in _TRIGGER_TAGS:
        if tag in tags:
            return f"{label} {tags[tag]}"
    return f"launched by hand (UI launchpad, CLI or API) as OS user {os.environ.get('USER', '?')}"


def restore_audit_record(
    key: AssetKey, day: str | None, metadata: dict[str, object]
) -> AssetObservation:
    """The audit record of a restore: an observation on what it was restored from."""
    return AssetObservation(
        asset_key=key,
        partition=day,
        description=f"restore at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
        metadata=metadata,
    )


@job(
    name=names.RESTORE_DATABASE_JOB,
    description="Restore one database's archive into a target server (a new database by "
    "default; over an existing one only with confirm), from the archive store or the replica "
    "store. Every restore is an audit event on postgres/<db>/archive (or .../replica).",
)
def restore_database_job() -> None:
    restore_from_archive()
