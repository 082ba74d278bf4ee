"""Restoring an archive: fetch it, run pg_restore, prove the result matches its manifest.

Shared by the restore tests (into a throw-away database) and the restore job (the day of the
disaster). An archive is decompressed into a local file on the way down, because a stream
written by pg_dump to a pipe has no data offsets and `pg_restore -j` needs a seekable file.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import psycopg

from backup_pipelines.core.common.client_tools import ClientTools, find_client_tools
from backup_pipelines.core.common.config import RestoreAssertion
from backup_pipelines.core.common.encryption import AGE, ArchiveKey, decoding_stages, key_problem
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.common.streams import Pipeline, first_cause
from backup_pipelines.core.postgres.catalog import (
    count_rows,
    read_constraints,
    read_data_relations,
    read_sequences,
)
from backup_pipelines.core.postgres.manifest import Manifest, list_backup_days, read_manifest
from backup_pipelines.core.postgres.rowcount import set_data_offsets
from backup_pipelines.core.postgres.toc import parse_toc
from backup_pipelines.storage import ObjectStore
from backup_pipelines.storage.digest import HashingCounter, StreamDigest

ASSERTION_TIMEOUT = "5min"
MAX_IDENTIFIER_BYTES = 63
_DAYS_LISTED = 10


class RestoreError(RuntimeError):
    """A restore was refused or failed; the message names the database, the day and the fix."""


# --- which archive --------------------------------------------------------------------------


def archive_manifest(store: ObjectStore, database: str, day: str | None) -> Manifest:
    """The manifest of `database`'s archive of `day` (default: the newest archive)."""
    days = list_backup_days(store, database)
    if not days:
        raise RestoreError(f"database {database!r} has no archive in {store.uri(database)}/")
    day = day or days[-1]
    manifest = read_manifest(store, database, day) if day in days else None
    if manifest is None:
        raise RestoreError(
            f"database {database!r} has no archive for {day}; archived days (newest "
            f"{_DAYS_LISTED}): {', '.join(days[-_DAYS_LISTED:])}"
        )
    return manifest


def server_major_of(version: str) -> int:
    return int(version.split(".")[0].split()[0])


def restore_tools(pg_bin_dir: str | None, manifest: Manifest, target_major: int) -> ClientTools:
    """A pg_restore that reads the archive's format and suits the target server."""
    tools = find_client_tools(pg_bin_dir, max(manifest.pg_dump_version, target_major))
    if tools.major_version < manifest.pg_dump_version:
        raise RestoreError(
            f"database {manifest.database!r}, {manifest.partition}: the archive was written by "
            f"pg_dump {manifest.pg_dump_version} but the newest pg_restore found is "
            f"{tools.major_version} ({tools.bin_dir}); install postgresql-client-"
            f"{manifest.pg_dump_version} or set pg_bin_dir"
        )
    return tools


def require_new_enough(manifest: Manifest, target_major: int, target: str) -> None:
    source_major = server_major_of(manifest.server_version)
    if target_major < source_major:
        raise RestoreError(
            f"database {manifest.database!r}, {manifest.partition}: {target} runs PostgreSQL "
            f"{target_major} but the backup came from PostgreSQL {manifest.server_version}; "
            f"restore onto a server of version {source_major} or newer"
        )


# --- fetching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedArchive:
    path: Path
    digest: StreamDigest  # of the stored object, as it was read
    problem: str | None  # why decompression failed, if it did
    seconds: float

    def checksum_problem(self, manifest: Manifest) -> str | None:
        if (self.digest.sha256, self.digest.size) == (manifest.sha256, manifest.size_bytes):
            return None
        return (
            f"the archive fails its checksum: read {self.digest.size} bytes with SHA-256 "
            f"{self.digest.sha256}, the manifest records {manifest.size_bytes} bytes with "
            f"SHA-256 {manifest.sha256}"
        )


@contextlib.contextmanager
def fetched_archive(
    store: ObjectStore, manifest: Manifest, scratch_dir: str | None, key: ArchiveKey | None
) -> Iterator[FetchedArchive]:
    """Download an archive, hashing, decrypting and decompressing it on the way; removed on
    exit. A key that does not fit is refused before anything is read."""
    problem = key_problem(manifest, key)
    if problem:
        raise RestoreError(problem)
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f"restore_{manifest.database}_", dir=scratch_dir))
    except OSError as error:
        raise RestoreError(
            f"restore_test.scratch_dir: cannot create a working folder in "
            f"{scratch_dir or tempfile.gettempdir()}: {error.strerror}"
        ) from None
    try:
        path = workdir / f"{manifest.database}.dump"
        started = time.monotonic()
        with path.open("wb") as output:
            digest, problem = _download(
                store.read_chunks(manifest.object_key), manifest, key, output
            )
        if problem and "No space left" in problem:
            problem += f" (in {workdir}; give restore_test.scratch_dir a disk with more room)"
        if not problem:
            set_data_offsets(path, workdir)
        yield FetchedArchive(path, digest, problem, time.monotonic() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _download(
    chunks: Iterable[bytes], manifest: Manifest, key: ArchiveKey | None, output: IO[bytes]
) -> tuple[StreamDigest, str | None]:
    counter = HashingCounter()
    with decoding_stages(manifest, key) as (stages, pass_fds):
        if not stages:
            for chunk in chunks:
                counter.update(chunk)
                output.write(chunk)
            return counter.digest(), None
        pipeline = Pipeline(stages, feed=True, output=output, pass_fds=pass_fds)
    try:
        writing = True
        for chunk in chunks:
            counter.update(chunk)  # read on after a failure: the checksum names the damage
            if writing:
                try:
                    pipeline.stdin.write(chunk)
                except BrokenPipeError:
                    writing = False
        with contextlib.suppress(BrokenPipeError):
            pipeline.stdin.close()
    except BaseException:
        pipeline.kill()
        raise
    failed = [(name, code, stderr) for name, code, stderr in pipeline.wait() if code != 0]
    if not failed:
        return counter.digest(), None
    name, _, stderr = first_cause(failed)
    verb = "decrypt" if name == AGE else "decompress"
    return counter.digest(), f"{name} could not {verb} the archive: {stderr or 'no message'}"


def look_alike_problem(
    tools: ClientTools,
    archive: Path,
    manifest: Manifest,
    database: str,
    configured_name: str | None,
) -> str | None:
    """Why the fetched archive is not a backup of `database` (its header names another
    database than its manifest, or the manifest is another database's), or None."""
    listed = subprocess.run(
        [tools.program("pg_restore"), "--list", str(archive)], capture_output=True, text=True
    )
    if listed.returncode != 0:
        return f"pg_restore cannot read the archive: {listed.stderr.strip() or 'no message'}"
    dumped = parse_toc(listed.stdout).dumped_database
    return manifest.identity_problem(database, dumped, configured_name)


# --- pg_restore -----------------------------------------------------------------------------


def run_pg_restore(
    tools: ClientTools, target: Connection, archive: Path, *, jobs: int, options: list[str]
) -> float:
    """pg_restore `archive` into `target`'s database, stopping at the first error; seconds."""
    argv = [
        tools.program("pg_restore"),
        "--exit-on-error",
        "--no-password",
        f"--jobs={jobs}",
        *options,
        f"--dbname={target.dsn}",
        str(archive),
    ]
    started = time.monotonic()
    pipeline = Pipeline([("pg_restore", argv)], env=target.client_env(), output=subprocess.DEVNULL)
    try:
        _, code, stderr = pipeline.wait()[0]
    except BaseException:  # cancelled: stop pg_restore before its database is dropped
        pipeline.kill()
        raise
    if code != 0:
        raise RestoreError(
            target.redact(
                f"database {target.database!r}: pg_restore into {target.params['dbname']!r} "
                f"failed (exit {code}): {stderr or 'no message'}"
            )
        )
    return time.monotonic() - started


# --- proving a restored database ------------------------------------------------------------


@dataclass(frozen=True)
class RestoreValidation:
    tables_compared: int
    rows_compared: int
    constraints_compared: int
    sequences_compared: int
    assertions_run: int
    mismatches: list[str]  # each begins with the table, sequence or assertion it concerns
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def metadata(self) -> dict[str, Any]:
        return {
            "tables_compared": self.tables_compared,
            "rows_compared": self.rows_compared,
            "constraints_compared": self.constraints_compared,
            "sequences_compared": self.sequences_compared,
            "assertions_run": self.assertions_run,
            "mismatches": self.mismatches[:50],
            "validation_seconds": round(self.seconds, 3),
        }


def validate_restored(
    restored: Connection,
    manifest: Manifest,
    assertions: Iterable[RestoreAssertion] = (),
    *,
    jobs: int = 2,
) -> RestoreValidation:
    """Compare a restored database with its manifest: rows, constraints, sequences, assertions."""
    started = time.monotonic()
    mismatches: list[str] = []
    with restored.connect(autocommit=True) as conn, conn.cursor() as cursor:
        present = {(schema, name) for _, schema, name, _ in read_data_relations(cursor)}
        to_count = [r for r in manifest.relation_counts if (r.schema, r.name) in present]
        mismatches += [
            f"{r.qualified_name}: {r.kind} is missing from the restored database"
            + (" or not populated" if r.kind == "materialized view" else "")
            for r in manifest.relation_counts
            if (r.schema, r.name) not in present
        ]
        mismatches += _constraint_mismatches(manifest, cursor)
        mismatches += _sequence_mismatches(manifest, read_sequences(cursor))
        assertions = list(assertions)
        mismatches += [problem for a in assertions if (problem := _run_assertion(conn, a))]
    counted = _count_in_parallel(restored, [(r.schema, r.name) for r in to_count], jobs)
    for relation in to_count:
        rows = counted[(relation.schema, relation.name)]
        if rows != relation.rows:
            mismatches.append(
                f"{relation.qualified_name}: {rows} rows restored, the backup's snapshot "
                f"held {relation.rows}"
            )
    return RestoreValidation(
        tables_compared=len(to_count),
        rows_compared=sum(counted.values()),
        constraints_compared=len(manifest.constraints),
        sequences_compared=sum(value is not None for value in manifest.sequences.values()),
        assertions_run=len(assertions),
        mismatches=sorted(mismatches),
        seconds=time.monotonic() - started,
    )


def _count_in_parallel(
    restored: Connection, relations: list[tuple[str, str]], jobs: int
) -> dict[tuple[str, str], int]:
    def count(share: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        with restored.connect(autocommit=True) as conn, conn.cursor() as cursor:
            return {relation: count_rows(cursor, *relation) for relation in share}

    shares = [relations[worker::jobs] for worker in range(jobs)]
    counted: dict[tuple[str, str], int] = {}
    with ThreadPoolExecutor(jobs, thread_name_prefix="restore-count") as pool:
        for result in pool.map(count, [share for share in shares if share]):
            counted.update(result)
    return counted


def _constraint_mismatches(manifest: Manifest, cursor: psycopg.Cursor) -> list[str]:
    restored = {(c.schema, c.table, c.name, c.kind): c for c in read_constraints(cursor)}
    mismatches = []
    for expected in manifest.table_constraints:
        found = restored.get((expected.schema, expected.table, expected.name, expected.kind))
        where = f"{expected.schema}.{expected.table}: {expected.kind} {expected.name}"
        if found is None:
            mismatches.append(f"{where} is missing")
        elif expected.validated and not found.validated:
            mismatches.append(f"{where} is not valid (NOT VALID after restore)")
    return mismatches


def _sequence_mismatches(manifest: Manifest, restored: dict[str, int | None]) -> list[str]:
    mismatches = []
    for name, expected in manifest.sequences.items():
        if name not in restored:
            mismatches.append(f"{name}: sequence is missing")
        elif expected is not None and (restored[name] is None or restored[name] < expected):
            mismatches.append(
                f"{name}: sequence restored at {restored[name]}, the snapshot had {expected}"
            )
    return mismatches


def _run_assertion(conn: psycopg.Connection, assertion: RestoreAssertion) -> str | None:
    where = f"assertion {assertion.name!r}"
    try:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(f"SET LOCAL statement_timeout = '{ASSERTION_TIMEOUT}'")
            rows = cursor.execute(assertion.sql).fetchall()  # type: ignore[arg-type]
    except psycopg.Error as error:
        return f"{where}: the query failed: {str(error).strip()}"
    if len(rows) != 1 or len(rows[0]) != 1:
        return f"{where}: the query must return one row with one column, it returned {rows[:3]}"
    value = rows[0][0]
    if _same_value(value, assertion.expect):
        return None
    return f"{where}: returned {value!r}, expected {assertion.expect!r}"


_BOOLEANS = {"true": True, "t": True, "false": False, "f": False}


def _as_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else _BOOLEANS.get(str(value).lower())


def _same_value(value: object, expected: object) -> bool:
    if expected is None or value is None:
        return value is expected
    if isinstance(expected, bool) or isinstance(value, bool):
        got, wanted = (_as_bool(value), _as_bool(expected))
        return got is not None and got == wanted
    if isinstance(expected, int | float):
        try:
            return Decimal(str(value)) == Decimal(str(expected))
        except InvalidOperation:
            return False
    return str(value) == str(expected)
