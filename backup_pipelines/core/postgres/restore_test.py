"""Restore tests: restore an archive into a throw-away database, prove it, always drop it.

The throw-away database is named `restore_test_<db>_<UTC timestamp>_<random>`, so it cannot
collide with a real one, and it is marked with a comment only once a session of the test is
connected to it. A marked database nobody is connected to is a leftover of a crashed test:
the next test drops it (a plain DROP DATABASE, which the server refuses while a test is still
connected, so concurrent tests never drop each other's).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.config import RestoreAssertion
from backup_pipelines.core.common.encryption import ArchiveKey
from backup_pipelines.core.common.postgres_client import (
    Connection,
    PostgresError,
    server_major_version,
)
from backup_pipelines.core.postgres.databases import (
    create_database,
    drop_database,
    drop_database_if_unused,
)
from backup_pipelines.core.postgres.manifest import Manifest
from backup_pipelines.core.postgres.restore import (
    RestoreError,
    RestoreValidation,
    fetched_archive,
    look_alike_problem,
    require_new_enough,
    restore_tools,
    run_pg_restore,
    validate_restored,
)
from backup_pipelines.storage import ObjectStore

TEMP_MARKER = "backup_pipelines restore test: dropped by the next restore test if left behind"
_TEMP_NAME = re.compile(r"^restore_test_[a-z0-9_]+_(\d{8}t\d{6}z)_[0-9a-f]{4}$")
# A crash between CREATE DATABASE and marking it leaves an unmarked copy; those are dropped
# once they are surely not being set up any more.
_UNMARKED_GRACE = dt.timedelta(hours=1)
CLIENT_CHECK_INTERVAL = "5s"


@dataclass(frozen=True)
class RestoreTestSettings:
    jobs: int = 2
    scratch_dir: str | None = None
    pg_bin_dir: str | None = None
    assertions: tuple[RestoreAssertion, ...] = ()
    key: ArchiveKey | None = None
    # The database the configured URL names, which the archive's header must name too.
    configured_name: str | None = None


@dataclass
class RestoreTestReport:
    """Filled in as the test proceeds, so a failure still reports how far it got."""

    database: str
    partition: str
    archive_uri: str
    scratch_server: str
    passed: bool = False
    summary: str = "not run"
    temp_database: str | None = None
    fetch_seconds: float = 0.0
    pg_restore_seconds: float = 0.0
    validation: RestoreValidation | None = None
    leftovers_dropped: list[str] = field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def restore_seconds(self) -> float:
        """Time from archive to usable database (download, decompression, pg_restore): the RTO."""
        return self.fetch_seconds + self.pg_restore_seconds

    def outcome(self) -> CheckOutcome:
        metadata: dict[str, Any] = {
            "restore_duration_seconds": round(self.restore_seconds, 3),
            "fetch_seconds": round(self.fetch_seconds, 3),
            "pg_restore_seconds": round(self.pg_restore_seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
            "archive_uri": self.archive_uri,
            "scratch_server": self.scratch_server,
            "temp_database": self.temp_database or "(not created)",
            "leftovers_dropped": self.leftovers_dropped,
        }
        if self.validation is not None:
            metadata.update(self.validation.metadata())
        return CheckOutcome(names.RESTORED_DATA_MATCHES, self.passed, self.summary, metadata)


def temp_database_name(database: str, now: dt.datetime) -> str:
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dt%H%M%Sz")
    return f"restore_test_{database[:28]}_{stamp}_{secrets.token_hex(2)}"


def drop_leftovers(admin: psycopg.Connection, now: dt.datetime) -> list[str]:
    """Drop throw-away databases of crashed tests; `admin` is an autocommit connection."""
    rows = admin.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'restore\\_test\\_%'"
    ).fetchall()
    dropped = []
    for name, comment in rows:
        match = _TEMP_NAME.match(name)
        if match is None:
            continue
        created = dt.datetime.strptime(match.group(1), "%Y%m%dt%H%M%Sz").replace(tzinfo=dt.UTC)
        if comment != TEMP_MARKER and now - created < _UNMARKED_GRACE:
            continue
        if drop_database_if_unused(admin, name):  # else a running test is connected to it
            dropped.append(name)
    return dropped


@contextmanager
def throwaway_database(
    scratch: Connection, admin: psycopg.Connection, name: str
) -> Iterator[Connection]:
    """Create `name`, hold a session in it while in use, and always drop it afterwards."""
    try:
        create_database(admin, name)
    except psycopg.errors.InsufficientPrivilege:
        raise RestoreError(
            f"the role {scratch.params.get('user', '(default)')!r} may not create databases on "
            f"{scratch.server}; restore tests need a role with CREATEDB there: set "
            "restore_test.url (or grant CREATEDB)"
        ) from None
    try:
        # If this process dies mid-query, the server notices within seconds and ends the
        # query, so the next test can drop the leftover instead of waiting for it.
        target = scratch.for_database(name).with_setting(
            "client_connection_check_interval", CLIENT_CHECK_INTERVAL
        )
        with target.connect(autocommit=True) as guard:
            guard.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(TEMP_MARKER)
                )
            )
            yield target
    finally:
        drop_database(admin, name)


def run_restore_test(
    archive: ObjectStore,
    manifest: Manifest,
    scratch: Connection,
    settings: RestoreTestSettings,
) -> RestoreTestReport:
    """Restore `manifest`'s archive on the scratch server and compare it with the manifest."""
    started = time.monotonic()
    report = RestoreTestReport(
        database=manifest.database,
        partition=manifest.partition,
        archive_uri=archive.uri(manifest.object_key),
        scratch_server=scratch.server,
    )
    try:
        _restore_and_validate(archive, manifest, scratch, settings, report)
    except (RestoreError, PostgresError) as error:
        report.summary = f"restore failed: {error}"
    except psycopg.Error as error:
        report.summary = f"restore failed: {scratch.describe_error(error)}"
    report.total_seconds = time.monotonic() - started
    return report


def _restore_and_validate(
    archive: ObjectStore,
    manifest: Manifest,
    scratch: Connection,
    settings: RestoreTestSettings,
    report: RestoreTestReport,
) -> None:
    with scratch.connect(autocommit=True) as admin:
        scratch_major = server_major_version(admin)
        require_new_enough(manifest, scratch_major, f"the scratch server {scratch.server}")
        tools = restore_tools(settings.pg_bin_dir, manifest, scratch_major)
        report.leftovers_dropped = drop_leftovers(admin, dt.datetime.now(dt.UTC))
        with fetched_archive(archive, manifest, settings.scratch_dir, settings.key) as fetched:
            report.fetch_seconds = fetched.seconds
            problem = (
                fetched.checksum_problem(manifest)
                or fetched.problem
                or look_alike_problem(
                    tools, fetched.path, manifest, scratch.database, settings.configured_name
                )
            )
            if problem:
                report.summary = f"not restored: {problem}"
                return
            report.temp_database = temp_database_name(manifest.database, dt.datetime.now(dt.UTC))
            with throwaway_database(scratch, admin, report.temp_database) as target:
                report.pg_restore_seconds = run_pg_restore(
                    tools,
                    target,
                    fetched.path,
                    jobs=settings.jobs,
                    options=["--no-owner", "--no-privileges"],
                )
                report.validation = validate_restored(
                    target, manifest, settings.assertions, jobs=settings.jobs
                )
    report.passed = report.validation.passed
    report.summary = _summary(report, report.validation)


def _counted(count: int, one: str, many: str, none: str) -> str:
    """'1 assertion holds', '3 assertions hold', or the words for none."""
    return none if count == 0 else f"1 {one}" if count == 1 else f"{count:,} {many}"


def _summary(report: RestoreTestReport, validation: RestoreValidation) -> str:
    if validation.passed:
        parts = [
            f"{validation.tables_compared:,} table(s) and {validation.rows_compared:,} row(s) "
            "match the snapshot",
            _counted(
                validation.constraints_compared,
                "constraint valid",
                "constraints valid",
                "no constraints",
            ),
            _counted(
                validation.sequences_compared,
                "sequence in step",
                "sequences in step",
                "no sequences",
            ),
            _counted(
                validation.assertions_run,
                "assertion holds",
                "assertions hold",
                "no assertions configured",
            ),
        ]
        return f"restored {report.archive_uri} in {report.restore_seconds:.1f} s: " + ", ".join(
            parts
        )
    listed = "; ".join(validation.mismatches[:10])
    more = len(validation.mismatches) - 10
    return f"the restored copy differs from the backup: {listed}" + (
        f" (and {more} more)" if more > 0 else ""
    )
