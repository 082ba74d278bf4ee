"""The restore job (the day of the disaster): a chosen archive restored into a new database, or
over an existing one only when confirmed by name, then proven against its manifest."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from backup_pipelines.core.common.config import RestoreAssertion
from backup_pipelines.core.common.encryption import ArchiveKey
from backup_pipelines.core.common.postgres_client import Connection, server_major_version
from backup_pipelines.core.postgres.databases import create_database, database_exists, drop_database
from backup_pipelines.core.postgres.manifest import Manifest
from backup_pipelines.core.postgres.restore import (
    MAX_IDENTIFIER_BYTES,
    RestoreError,
    RestoreValidation,
    fetched_archive,
    require_new_enough,
    restore_tools,
    run_pg_restore,
    validate_restored,
)
from backup_pipelines.storage import ObjectStore


@dataclass(frozen=True)
class DatabaseRestoreRequest:
    target: Connection  # the target server; the database in its URL is only used to connect
    target_database: str
    replace_existing: bool = False
    confirm: str = ""
    allow_checksum_mismatch: bool = False
    jobs: int = 2
    no_owner: bool = False


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    target_database: str
    replaced_existing: bool
    fetch_seconds: float
    restore_seconds: float
    checksum_problem: str | None  # set only when restored anyway, by request
    validation: RestoreValidation


def restore_archive(
    store: ObjectStore,
    manifest: Manifest,
    request: DatabaseRestoreRequest,
    *,
    pg_bin_dir: str | None = None,
    scratch_dir: str | None = None,
    assertions: Iterable[RestoreAssertion] = (),
    key: ArchiveKey | None = None,
) -> RestoreResult:
    """Restore one archive into a new database, or over an existing one when confirmed."""
    where = f"database {manifest.database!r}, {manifest.partition}"
    _require_confirmation(request, where)
    target = request.target.for_database(request.target_database)
    with request.target.connect(autocommit=True) as admin:
        target_major = server_major_version(admin)
        require_new_enough(manifest, target_major, f"the target server {request.target.server}")
        tools = restore_tools(pg_bin_dir, manifest, target_major)
        _require_target_state(request, database_exists(admin, request.target_database), where)
        with fetched_archive(store, manifest, scratch_dir, key) as fetched:
            checksum_problem = fetched.checksum_problem(manifest)
            if checksum_problem and not request.allow_checksum_mismatch:
                raise RestoreError(
                    f"{where}: refusing to restore: {checksum_problem}. Restore another day, or "
                    "set allow_checksum_mismatch: true to try this archive anyway"
                )
            if fetched.problem:
                raise RestoreError(f"{where}: {fetched.problem}")
            owner_options = ["--no-owner", "--no-privileges"] if request.no_owner else []
            if request.replace_existing:
                # One transaction: a failed restore leaves the existing database as it was.
                options = [*owner_options, "--clean", "--if-exists", "--single-transaction"]
                seconds = run_pg_restore(tools, target, fetched.path, jobs=1, options=options)
            else:
                create_database(admin, request.target_database)
                try:
                    seconds = run_pg_restore(
                        tools, target, fetched.path, jobs=request.jobs, options=owner_options
                    )
                except BaseException:
                    drop_database(admin, request.target_database)
                    raise
    return RestoreResult(
        manifest=manifest,
        target_database=request.target_database,
        replaced_existing=request.replace_existing,
        fetch_seconds=fetched.seconds,
        restore_seconds=seconds,
        checksum_problem=checksum_problem,
        validation=validate_restored(target, manifest, assertions, jobs=request.jobs),
    )


def _require_confirmation(request: DatabaseRestoreRequest, where: str) -> None:
    if len(request.target_database.encode()) > MAX_IDENTIFIER_BYTES:
        raise RestoreError(f"{where}: target_database is longer than 63 bytes")
    if request.replace_existing and request.confirm != request.target_database:
        raise RestoreError(
            f"{where}: restoring over the existing database {request.target_database!r} "
            f"replaces its contents; to confirm, set confirm: {request.target_database}"
        )


def _require_target_state(request: DatabaseRestoreRequest, exists: bool, where: str) -> None:
    name, server = request.target_database, request.target.server
    if exists and not request.replace_existing:
        raise RestoreError(
            f"{where}: the target database {name!r} already exists on {server}; choose another "
            f"target_database, or set replace_existing: true and confirm: {name}"
        )
    if not exists and request.replace_existing:
        raise RestoreError(
            f"{where}: replace_existing is set but {name!r} does not exist on {server}; "
            "check target_database, or leave replace_existing false to create it"
        )
