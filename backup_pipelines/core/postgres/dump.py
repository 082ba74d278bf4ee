"""Taking a dump: pg_dump of an exported snapshot, streamed through a compressor into storage.

The manifest is written after the dump object is complete; it is the commit marker. A failed
dump leaves the day's previous backup (if any) untouched and no new object behind.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from backup_pipelines.core.common.client_tools import (
    ClientTools,
    find_client_tools,
    require_pg_dump_for,
)
from backup_pipelines.core.common.encryption import AGE, ENCRYPTION_METHOD, ArchiveKey
from backup_pipelines.core.common.layout import dump_object_key, manifest_key
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.common.streams import (
    Compression,
    Pipeline,
    compress_command,
)
from backup_pipelines.core.postgres.catalog import ExportedSnapshot, exported_snapshot
from backup_pipelines.core.postgres.manifest import BackupRef, Manifest, remove_superseded
from backup_pipelines.core.postgres.rowcount import (
    ROW_COUNTER_STAGE,
    read_counts,
    row_counter_command,
)
from backup_pipelines.storage import ObjectStore, ObjectWriter, writing

LOCK_WAIT_TIMEOUT = "5min"


class DumpError(RuntimeError):
    """A dump could not be taken; the message names the database and the cause."""


@dataclass(frozen=True)
class DumpSettings:
    compression: Compression = "zstd"
    compression_level: int | None = None
    pg_bin_dir: str | None = None
    encrypt_with: ArchiveKey | None = None  # client-side encryption, off by default


def utc_today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def require_day_open(subject: str, day: str, submitted_at: dt.datetime | None) -> None:
    """A snapshot can only be taken now: of today (UTC), or of the day the run was submitted on
    (a queue, a pool limit or a daemon restart may start it after midnight). A day that was
    already over when the run was submitted (a backfill of past days) is refused."""
    today = utc_today()
    if day == today or _asked_on(day, submitted_at):
        return
    raise DumpError(
        f"database {subject!r}: cannot take a dump for {day}: a dump is a snapshot taken "
        f"now, so only today's partition ({today}, UTC) can be dumped. To re-run archive "
        "and verification for a past day, select only those assets in the backfill."
    )


def _utc_day(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).date().isoformat()


def _asked_on(day: str, submitted_at: dt.datetime | None) -> bool:
    """Was the run submitted while `day` (UTC) was today?"""
    return submitted_at is not None and _utc_day(submitted_at) == day


def take_dump(
    connection: Connection,
    store: ObjectStore,
    day: str,
    settings: DumpSettings,
    submitted_at: dt.datetime | None = None,
) -> tuple[BackupRef, Manifest]:
    """Dump `day`'s backup of the connection's database (`submitted_at`: when the run asking
    for it was submitted; a run submitted on `day` may start after it ended)."""
    database = connection.database
    require_day_open(database, day, submitted_at)
    started = time.monotonic()
    with exported_snapshot(connection) as snapshot:
        if _utc_day(snapshot.taken_at) != day and not _asked_on(day, submitted_at):
            raise DumpError(f"database {database!r}: the UTC day changed before the snapshot")
        tools = find_client_tools(settings.pg_bin_dir, snapshot.server_major)
        require_pg_dump_for(tools, snapshot.server_major, database)
        key = dump_object_key(
            database,
            day,
            snapshot.taken_at,
            settings.compression,
            encrypted=settings.encrypt_with is not None,
        )
        relations = snapshot.data_relations()
        views = [(schema, name) for _, schema, name, relkind in relations if relkind == "m"]
        writer = store.open_writer(key, expected_size=_database_size(snapshot))
        # Tables' rows are counted in the dump stream. A materialized view's rows are not in
        # the dump (a restore refreshes it): they are counted in the snapshot, beside the dump.
        with writing(writer), ThreadPoolExecutor(1, thread_name_prefix="row-counts") as pool:
            counting = pool.submit(snapshot.count_rows, views)
            try:
                table_rows = _stream_dump(connection, snapshot, tools, writer, settings)
            except BaseException:
                snapshot.connection.cancel_safe()
                # A failed count (e.g. no privilege) aborts the snapshot, which is what made
                # pg_dump fail: report the cause, not the symptom.
                cause = counting.exception(timeout=30)
                if cause is not None and not isinstance(cause, psycopg.errors.QueryCanceled):
                    raise cause from None
                raise
            rows = {**table_rows, **dict(zip(views, counting.result(), strict=True))}
            contents = snapshot.contents(relations, rows)
            digest = writer.commit()
    manifest = Manifest(
        database=database,
        partition=day,
        object_key=key,
        snapshot_taken_at=snapshot.taken_at.isoformat(),
        server_version=snapshot.server_version,
        source_database=snapshot.database_name,
        pg_dump_version=tools.major_version,
        compression=settings.compression,
        compression_level=settings.compression_level,
        size_bytes=digest.size,
        sha256=digest.sha256,
        relations=[vars(relation) for relation in contents.relations],
        sequences=contents.sequences,
        constraints=[vars(constraint) for constraint in contents.constraints],
        dump_seconds=round(time.monotonic() - started, 3),
        encryption=ENCRYPTION_METHOD if settings.encrypt_with else None,
        encryption_recipient=settings.encrypt_with.recipient if settings.encrypt_with else None,
        submitted_at=submitted_at.isoformat() if submitted_at else None,
        start_delay_seconds=round((snapshot.taken_at - submitted_at).total_seconds(), 3)
        if submitted_at
        else None,
    )
    store.write_bytes(manifest_key(database, day), manifest.to_json())
    remove_superseded(store, database, day, keep=key)
    return ref_for(store, manifest), manifest


def ref_for(store: ObjectStore, manifest: Manifest) -> BackupRef:
    return BackupRef(
        database=manifest.database,
        partition=manifest.partition,
        uri=store.uri(manifest.object_key),
        object_key=manifest.object_key,
        manifest_key=manifest_key(manifest.database, manifest.partition),
        sha256=manifest.sha256,
        size_bytes=manifest.size_bytes,
    )


def _database_size(snapshot: ExportedSnapshot) -> int:
    with snapshot.connection.cursor() as cursor:
        (size,) = cursor.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(size)


def _stream_dump(
    connection: Connection,
    snapshot: ExportedSnapshot,
    tools: ClientTools,
    writer: ObjectWriter,
    settings: DumpSettings,
) -> Mapping[tuple[str, str], int]:
    """Stream pg_dump's output through the row counter and the compressor into `writer`;
    returns each table's rows; raises if any stage fails."""
    with tempfile.TemporaryDirectory(prefix="backup-pipelines-rows-") as folder:
        counts_file = Path(folder) / "rows.tsv"
        _run_dump_pipeline(connection, snapshot, tools, writer, settings, counts_file)
        return read_counts(counts_file, snapshot.connection.info.encoding)


def _run_dump_pipeline(
    connection: Connection,
    snapshot: ExportedSnapshot,
    tools: ClientTools,
    writer: ObjectWriter,
    settings: DumpSettings,
    counts_file: Path,
) -> None:
    pg_dump = [
        tools.program("pg_dump"),
        "--format=custom",
        "--compress=0",  # compressed as a whole by a separate, faster process
        f"--snapshot={snapshot.snapshot_id}",
        f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
        "--no-password",
        f"--dbname={connection.dsn}",
    ]
    stages = [("pg_dump", pg_dump), (ROW_COUNTER_STAGE, row_counter_command(counts_file))]
    compressor = compress_command(settings.compression, settings.compression_level)
    if compressor:
        stages.append((settings.compression, compressor))
    if settings.encrypt_with:
        stages.append((AGE, settings.encrypt_with.encrypt_command()))
    failed = Pipeline(stages, env=connection.client_env()).drain_into(writer.write)
    if failed:
        name, code, err = failed
        raise DumpError(
            connection.redact(
                f"database {connection.database!r}: {name} failed (exit {code}): "
                f"{err or 'no message'}"
            )
        )
