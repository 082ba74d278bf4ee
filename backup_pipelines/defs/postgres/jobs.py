"""The database jobs: `daily_backup` takes, archives and verifies every backup of a day;
`restore_test` proves archives restore; `restore_database` is for the day of the disaster.
Thin wiring over core/restore_test.py and core/restore.py.

`restore_test` is an op job, not a partitioned asset job, so that its run config can name the
databases and leave the day open ("each database's newest archive"); its results are recorded
as `restore_test` check evaluations on postgres/<db>/verification for the day tested, exactly
where the asset check of the same name records them.
"""

import datetime as dt
import os
import re
import socket
from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetObservation,
    AssetSelection,
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    MetadataValue,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.config import expand_env
from backup_pipelines.core.encryption import EncryptionError
from backup_pipelines.core.postgres import Connection, PostgresError
from backup_pipelines.core.restore import (
    RestoreError,
    RestoreRequest,
    archive_manifest,
    restore_archive,
)
from backup_pipelines.defs.postgres.checks import restore_test_report
from backup_pipelines.defs.resources import BackupSettings

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRIGGER_TAGS = (
    ("dagster/schedule_name", "schedule"),
    ("dagster/sensor_name", "sensor"),
    ("dagster/backfill", "backfill"),
    ("dagster/user", "user"),
    ("backup_pipelines/triggered_by", "submitted by"),
)


class RestoreTestRequest(Config):
    databases: list[str] = Field(
        default=[], description="Databases to restore-test; empty means every configured one."
    )
    partition: str | None = Field(
        default=None, description="Day (YYYY-MM-DD) to test; default: each database's newest."
    )


def daily_backup_job(restore_tests: list[AssetChecksDefinition]) -> UnresolvedAssetJobDefinition:
    """Partitioned like the assets it selects (one run per day)."""
    return define_asset_job(
        names.DAILY_BACKUP_JOB,
        # Restore tests run on their own (weekly, or per new archive when configured).
        selection=AssetSelection.key_prefixes([names.DATABASE_PREFIX], [names.BUCKET_PREFIX])
        - AssetSelection.checks(*restore_tests),
        description="Dump, archive and verify every configured database, and snapshot and "
        "verify every configured bucket, for one day.",
    )


def restore_test_run_config(databases: list[str], partition: str | None) -> dict[str, object]:
    request = {"databases": databases, "partition": partition}
    return {"ops": {"plan_restore_tests": {"config": request}}}


@op(out=DynamicOut(tuple), description="One restore test per requested database.")
def plan_restore_tests(
    config: RestoreTestRequest, settings: BackupSettings
) -> Iterator[DynamicOutput[tuple]]:
    configured = list(settings.config().databases)
    unknown = sorted(set(config.databases) - set(configured))
    if unknown:
        raise Failure(
            f"restore_test: unknown database(s) {', '.join(unknown)}; configured databases: "
            f"{', '.join(configured)}"
        )
    if config.partition is not None and not _DAY.match(config.partition):
        raise Failure(f"restore_test: partition {config.partition!r} is not a day (YYYY-MM-DD)")
    for database in config.databases or configured:
        yield DynamicOutput((database, config.partition), mapping_key=database)


@op(
    pool=names.RESTORE_TEST_POOL,
    out={},
    description="Restore one archive into a throw-away database.",
)
def restore_test_database(
    settings: BackupSettings, target: tuple
) -> Iterator[AssetCheckEvaluation]:
    database, day = target
    try:
        report = restore_test_report(settings, database, day)
    except RestoreError as error:
        raise Failure(str(error)) from None
    outcome = report.outcome()
    # Yielded, not logged: a logged event would be lost when the Failure below ends the step.
    yield AssetCheckEvaluation(
        asset_key=names.database_key(database, names.VERIFICATION),
        check_name=outcome.name,
        passed=outcome.passed,
        metadata=outcome.metadata,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        partition=report.partition,
    )
    if not outcome.passed:
        raise Failure(
            f"restore test of {database!r} ({report.partition}) failed: {outcome.description}"
        )


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


@op(out={}, description="Restore one archive into a target server, recorded as an audit event.")
def restore_from_archive(
    context: OpExecutionContext, config: RestoreJobRequest, settings: BackupSettings
) -> Iterator[AssetObservation]:
    configured = settings.config().databases
    if config.database not in configured:
        raise Failure(
            f"restore_database: unknown database {config.database!r}; configured databases: "
            f"{', '.join(configured)}"
        )
    target = _target_connection(config)
    archive = settings.stores().archive
    audit: dict[str, object] = {
        "event": "restore",
        "triggered_by": _triggered_by(context.run.tags),
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
            RestoreRequest(
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
        yield _audit_record(config.database, day, {**audit, "outcome": f"failed: {error}"})
        raise Failure(str(error)) from None
    validation = result.validation
    outcome = "restored" if validation.passed else "restored, but differs from the backup"
    yield _audit_record(
        config.database,
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


def _triggered_by(tags: dict[str, str]) -> str:
    for tag, label in _TRIGGER_TAGS:
        if tag in tags:
            return f"{label} {tags[tag]}"
    return f"launched by hand (UI launchpad, CLI or API) as OS user {os.environ.get('USER', '?')}"


def _audit_record(database: str, day: str | None, metadata: dict[str, object]) -> AssetObservation:
    """The audit record of a restore: an observation on the archive it came from."""
    return AssetObservation(
        asset_key=names.database_key(database, names.ARCHIVE),
        partition=day,
        description=f"restore at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
        metadata=metadata,
    )


@job(
    name=names.RESTORE_TEST_JOB,
    description="Restore archives into throw-away databases and prove them; results are the "
    "restore_test checks on postgres/<db>/verification.",
)
def restore_test_job() -> None:
    plan_restore_tests().map(restore_test_database)


@job(
    name=names.RESTORE_DATABASE_JOB,
    description="Restore one database's archive into a target server (a new database by "
    "default; over an existing one only with confirm). Every restore is an audit event on "
    "postgres/<db>/archive.",
)
def restore_database_job() -> None:
    restore_from_archive()
