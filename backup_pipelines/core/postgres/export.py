"""Data exports: the rows someone asked for, read from one snapshot and streamed into a ZIP in
the dump store, with the DDL of what was exported and a manifest; and reading one back.

Everything is read inside one repeatable-read, read-only transaction (the snapshot pg_dump
also uses for schema.sql), so rows written during the export are not in it, and a query that
would write fails. The ZIP is written through the store's atomic writer: an export that fails
or passes a limit leaves no object behind.

Inside the ZIP: tables/<schema>.<table>.csv (or .parquet), queries/<name>.csv, schema.sql and
manifest.json (every file's row count and SHA-256).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.metadata
import io
import json
import queue
import re
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from backup_pipelines.core.common.client_tools import ClientTools, find_client_tools
from backup_pipelines.core.common.layout import export_key
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.common.streams import Pipeline
from backup_pipelines.core.postgres import _rowcount
from backup_pipelines.core.postgres.catalog import ExportedSnapshot, exported_snapshot
from backup_pipelines.core.postgres.export_request import (
    ExportRequest,
    ExportRequestError,
    bound_params,
    to_psycopg,
    validate,
)
from backup_pipelines.storage import ObjectStore, ObjectWriter, writing
from backup_pipelines.storage.digest import CHUNK_SIZE

MANIFEST = "manifest.json"
SCHEMA = "schema.sql"
PARENT_DEPTH = 8  # foreign keys followed this many steps up (a self-reference stops there)
_BATCH_ROWS = 10_000  # rows per Parquet row group
_QUEUED = 4  # chunks of CSV between the reading and the compressing thread
_EXPORTABLE_KINDS = ("r", "p", "v", "m", "f")

_FOREIGN_KEYS = """
SELECT con.conrelid, con.confrelid,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con WHERE con.contype = 'f'
"""


class ExportError(RuntimeError):
    """An export could not be made whole; the message names the database and the cause."""


@dataclass(frozen=True)
class ExportLimits:
    max_rows: int
    max_bytes: int


@dataclass(frozen=True)
class ExportManifest:
    export_id: str
    database: str
    requested_by: str
    reason: str
    request: dict[str, Any]
    format: str
    snapshot_taken_at: str
    server_version: str
    files: list[dict[str, Any]]  # name, source, rows (None for schema.sql), size_bytes, sha256
    object_key: str
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f["rows"] or 0 for f in self.files)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ExportManifest:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class _Table:
    oid: int
    schema: str
    name: str

    @property
    def identifier(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class _Output:
    path: str  # inside the ZIP
    source: str
    query: sql.Composable


def take_export(
    connection: Connection,
    store: ObjectStore,
    request: ExportRequest,
    export_id: str,
    limits: ExportLimits,
    pg_bin_dir: str | None = None,
) -> ExportManifest:
    """Export what `request` asks for from one snapshot into `exports/<db>/<export_id>.zip`."""
    validate(request)
    params = bound_params(request)
    where = f"export of {request.database!r}"
    with exported_snapshot(connection) as snapshot:
        try:
            outputs, tables = _plan(snapshot.connection, request)
            _refuse_estimated_excess(snapshot.connection, outputs, params, limits, where)
            key = export_key(request.database, export_id)
            writer = store.open_writer(key)
            with writing(writer):
                sink = _Sink(writer, limits.max_bytes, where)
                with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
                    files = _write_files(
                        archive, snapshot, connection, outputs, tables, params, limits, pg_bin_dir
                    )
                    manifest = ExportManifest(
                        export_id=export_id,
                        database=request.database,
                        requested_by=request.requested_by,
                        reason=request.reason,
                        request=request.model_dump(mode="json"),
                        format=request.format,
                        snapshot_taken_at=snapshot.taken_at.isoformat(),
                        server_version=snapshot.server_version,
                        files=files,
                        object_key=key,
                        versions=_versions(snapshot, request.format),
                    )
                    archive.writestr(MANIFEST, manifest.to_json())
                writer.commit()
        except psycopg.Error as error:
            raise ExportError(connection.redact(f"{where}: {str(error).strip()}")) from None
    return manifest


def _versions(snapshot: ExportedSnapshot, kind: str) -> dict[str, str]:
    versions = {"postgresql": snapshot.server_version}
    if kind == "parquet":
        versions["pyarrow"] = importlib.metadata.version("pyarrow")
    return versions


# --- what to read -----------------------------------------------------------------------------
def _plan(conn: psycopg.Connection, request: ExportRequest) -> tuple[list[_Output], list[_Table]]:
    """One output per table (the union of the rows each selection and each followed foreign
    key asks for) and per query."""
    conditions: dict[_Table, list[sql.Composable]] = {}
    frontier: list[tuple[_Table, sql.Composable, int]] = []
    for selection in request.tables:
        table = _resolve(conn, selection.table, request.database)
        condition = sql.SQL(to_psycopg(selection.where)) if selection.where else sql.SQL("TRUE")
        conditions.setdefault(table, []).append(condition)
        frontier.append((table, condition, 0))
    if request.follow_parents:
        _follow_parents(conn, conditions, frontier)
    ext = "parquet" if request.format == "parquet" else "csv"
    outputs = [
        _Output(
            f"tables/{table.label}.{ext}",
            table.label,
            sql.SQL("SELECT * FROM {} WHERE {}").format(
                table.identifier,
                sql.SQL(" OR ").join(sql.SQL("({})").format(c) for c in found),
            ),
        )
        for table, found in conditions.items()
    ] + [
        _Output(
            f"queries/{query.name}.{ext}", f"query {query.name}", sql.SQL(to_psycopg(query.sql))
        )
        for query in request.queries
    ]
    return outputs, list(conditions)


def _resolve(conn: psycopg.Connection, name: str, database: str) -> _Table:
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        [name],
    ).fetchone()
    if row is None or row[3] not in _EXPORTABLE_KINDS:
        raise ExportRequestError(
            f"export of {database!r}: unknown table {name!r}: no table or view of that name in "
            f"database {database!r} (name it as schema.table)"
        )
    return _Table(row[0], row[1], row[2])


def _follow_parents(
    conn: psycopg.Connection,
    conditions: dict[_Table, list[sql.Composable]],
    frontier: list[tuple[_Table, sql.Composable, int]],
) -> None:
    """Add, for every foreign key of a selected table, the parent rows the selected rows
    reference; and so on up, PARENT_DEPTH steps at most."""
    keys: dict[int, list[tuple[int, list[str], list[str]]]] = {}
    for child, parent, child_columns, parent_columns in conn.execute(_FOREIGN_KEYS):
        keys.setdefault(child, []).append((parent, child_columns, parent_columns))
    tables: dict[int, _Table] = {t.oid: t for t in conditions}
    while frontier:
        table, condition, depth = frontier.pop(0)
        if depth >= PARENT_DEPTH:
            continue
        for parent_oid, child_columns, parent_columns in keys.get(table.oid, ()):
            if parent_oid not in tables:
                row = conn.execute(
                    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE c.oid = %s",
                    [parent_oid],
                ).fetchone()
                assert row is not None
                tables[parent_oid] = _Table(parent_oid, row[0], row[1])
            parent = tables[parent_oid]
            referenced = sql.SQL("({}) IN (SELECT {} FROM {} WHERE {})").format(
                sql.SQL(", ").join(map(sql.Identifier, parent_columns)),
                sql.SQL(", ").join(map(sql.Identifier, child_columns)),
                table.identifier,
                condition,
            )
            conditions.setdefault(parent, []).append(referenced)
            frontier.append((parent, referenced, depth + 1))


def _refuse_estimated_excess(
    conn: psycopg.Connection,
    outputs: list[_Output],
    params: dict[str, Any],
    limits: ExportLimits,
    where: str,
) -> None:
    """The planner's row estimate, before anything is written: well past the limit, refused."""
    estimate = 0
    for output in outputs:
        (plan,) = conn.execute(
            sql.SQL("EXPLAIN (FORMAT JSON) {}").format(output.query), params
        ).fetchone()
        estimate += int(plan[0]["Plan"]["Plan Rows"])
    if estimate > limits.max_rows:
        raise ExportError(
            f"{where}: PostgreSQL estimates {estimate:,} rows, more than exports.max_rows "
            f"({limits.max_rows:,}); narrow the selection or raise the limit. Nothing was "
            "written."
        )


# --- writing ----------------------------------------------------------------------------------
class _Sink(io.RawIOBase):
    """The ZIP's byte stream into the store's writer, stopped at `max_bytes`."""

    def __init__(self, writer: ObjectWriter, max_bytes: int, where: str) -> None:
        self._writer, self._max, self._where, self.size = writer, max_bytes, where, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.size += len(chunk)
        if self.size > self._max:
            raise ExportError(
                f"{self._where}: the ZIP passed exports.max_bytes ({self._max:,} bytes); "
                "stopped, nothing was stored. Narrow the selection or raise the limit."
            )
        self._writer.write(chunk)
        return len(chunk)


class _Hashing:
    """Counts and hashes what is written into a ZIP entry (`record`, then `entry.write`)."""

    def __init__(self, entry: IO[bytes]) -> None:
        self.entry, self._digest, self.size = entry, hashlib.sha256(), 0

    def record(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)

    def write(self, chunk: bytes) -> int:
        self.record(chunk)
        return self.entry.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def _write_files(
    archive: zipfile.ZipFile,
    snapshot: ExportedSnapshot,
    connection: Connection,
    outputs: list[_Output],
    tables: list[_Table],
    params: dict[str, Any],
    limits: ExportLimits,
    pg_bin_dir: str | None,
) -> list[dict[str, Any]]:
    """Every output, then schema.sql; the manifest's list of them."""
    where = f"export of {connection.database!r}"
    tools = find_client_tools(pg_bin_dir, snapshot.server_major)
    reading = _Reading(snapshot, connection, tools, params)
    files: list[dict[str, Any]] = []
    remaining = limits.max_rows
    for output in outputs:
        try:
            rows, hashing = _write_output(archive, reading, output.path, output.query, remaining)
        except (psycopg.Error, _Refused) as error:
            message = f"{where}: {output.source}: {str(error).strip()}"
            raise ExportError(connection.redact(message)) from None
        if hashing is None:
            raise ExportError(
                f"{where}: more than exports.max_rows ({limits.max_rows:,}) rows (at "
                f"{output.source}); stopped, nothing was stored. Narrow the selection or "
                "raise the limit."
            )
        remaining -= rows
        files.append(_entry(output.path, output.source, rows, hashing))
    with archive.open(SCHEMA, "w") as entry:
        hashing = _Hashing(entry)
        _write_schema(reading, tables, hashing)
    files.append(_entry(SCHEMA, "pg_dump --schema-only", None, hashing))
    return files


def _entry(path: str, source: str, rows: int | None, hashing: _Hashing) -> dict[str, Any]:
    return {
        "name": path,
        "source": source,
        "rows": rows,
        "size_bytes": hashing.size,
        "sha256": hashing.sha256,
    }


@dataclass(frozen=True)
class _Reading:
    """What every output is read with: the export's snapshot, the database it is of, the
    client programs, the request's parameters."""

    snapshot: ExportedSnapshot
    connection: Connection
    tools: ClientTools
    params: dict[str, Any]


class _Refused(RuntimeError):
    """PostgreSQL refused a statement of the export (as psql reported it)."""


_PSQL_ERROR = re.compile(r"^(?:psql:[^:]*:\d+: )?(?:ERROR|FATAL):\s+", re.MULTILINE)


def _write_output(
    archive: zipfile.ZipFile, reading: _Reading, path: str, query: sql.Composable, limit: int
) -> tuple[int, _Hashing | None]:
    """Write one output's file; its rows, and what was written (None: more rows than `limit`;
    the writing stops as soon as the rows pass it, no LIMIT in the query, which costs the
    server a step per row)."""
    write = _write_csv if path.endswith(".csv") else _write_parquet
    with archive.open(path, "w", force_zip64=True) as entry:
        hashing = _Hashing(entry)
        rows = write(reading, query, hashing, limit)
    return rows, hashing if rows <= limit else None


def _write_csv(reading: _Reading, query: sql.Composable, out: _Hashing, limit: int) -> int:
    """COPY … TO STDOUT by psql joined to the export's snapshot: it takes PostgreSQL's rows in C
    (a message each), as a bare `psql \\copy` would. This thread counts and hashes what psql
    writes; another compresses it into the ZIP (hashing and deflating both release the GIL).
    The script goes in on stdin, so the query and its values are not in argv; the values are
    bound as literals by psycopg, never pasted. Returns the rows copied, or as soon as that
    passes `limit`, the rows counted so far."""
    copy = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(query)
    statement = psycopg.ClientCursor(reading.snapshot.connection).mogrify(copy, reading.params)
    script = (
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
        f"SET TRANSACTION SNAPSHOT '{reading.snapshot.snapshot_id}';\n"
        f"{statement};\n"
        "COMMIT;\n"
    )
    psql = [
        reading.tools.program("psql"),
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        "--no-password",
        f"--dbname={reading.connection.dsn}",
    ]
    pipeline = Pipeline([("psql", psql)], env=reading.connection.client_env(), feed=True)
    assert pipeline.stdin is not None
    rows = CsvRecords()
    try:
        pipeline.stdin.write(script.encode())
        pipeline.stdin.close()
        with _InThread(out.entry.write) as compress:
            for chunk in pipeline.read_chunks():
                rows.update(chunk)
                out.record(chunk)
                compress(chunk)
                if rows.records - 1 > limit:
                    pipeline.kill()
                    return rows.records - 1
    except BaseException:
        pipeline.kill()
        raise
    ((_, code, err),) = pipeline.wait()
    if code != 0:
        raise _Refused(_PSQL_ERROR.sub("", err).strip() or f"psql exited with status {code}")
    return rows.records - 1  # the header


class CsvRecords:
    """Counts the records of a CSV stream as PostgreSQL writes it: a newline ends a record
    unless it is inside a quoted field (the loop is C: core/postgres/_rowcount.c)."""

    def __init__(self) -> None:
        self.records, self._quoted = 0, False

    def update(self, chunk: bytes) -> None:
        records, self._quoted = _rowcount.csv_records(chunk, self._quoted)
        self.records += records


class _InThread:
    """Calls `sink` with each chunk in a thread of its own, at most _QUEUED chunks behind; an
    error there is raised here, at the next chunk or when the block ends."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._chunks: queue.Queue[bytes | None] = queue.Queue(_QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="export-writer", daemon=True)

    def _drain(self) -> None:
        try:
            while (chunk := self._chunks.get()) is not None:
                self._sink(chunk)
        except BaseException as error:  # handed to the reading thread
            self._error = error
            while self._chunks.get() is not None:  # let the reader finish putting
                pass

    def __call__(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(chunk)

    def __enter__(self) -> _InThread:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _write_parquet(reading: _Reading, query: sql.Composable, out: _Hashing, limit: int) -> int:
    """Row groups of _BATCH_ROWS from a server-side cursor into a temporary file (Parquet's
    footer points back into the file), then into the ZIP; stopped once the rows pass `limit`."""
    import pyarrow as pa  # only Parquet exports need it: a CSV export starts faster
    import pyarrow.parquet as pq

    rows = 0
    with (
        tempfile.TemporaryDirectory(prefix="backup-pipelines-export-") as folder,
        reading.snapshot.connection.cursor(name="export_rows") as cursor,
    ):
        path = Path(folder) / "part.parquet"
        cursor.execute(query, reading.params)
        batch = cursor.fetchmany(_BATCH_ROWS)
        assert cursor.description is not None
        schema = pa.schema([pa.field(c.name, _arrow_type(c.type_code)) for c in cursor.description])
        with pq.ParquetWriter(path, schema) as parquet:
            while True:
                columns = list(zip(*batch, strict=True)) if batch else [()] * len(schema)
                parquet.write_table(
                    pa.table(
                        [
                            pa.array(_arrow_values(values, f.type), type=f.type)
                            for values, f in zip(columns, schema, strict=True)
                        ],
                        schema=schema,
                    )
                )
                rows += len(batch)
                if len(batch) < _BATCH_ROWS or rows > limit:
                    break
                batch = cursor.fetchmany(_BATCH_ROWS)
        with path.open("rb") as written:
            for chunk in iter(lambda: written.read(CHUNK_SIZE), b""):
                out.write(chunk)
    return rows


def _arrow_type(oid: int) -> Any:
    """The Parquet column type of a PostgreSQL type; anything else (numeric, uuid, json,
    text, arrays) is kept exactly as its text."""
    import pyarrow as pa

    known = {
        16: pa.bool_(),
        20: pa.int64(),
        21: pa.int64(),
        23: pa.int64(),
        700: pa.float64(),
        701: pa.float64(),
        1082: pa.date32(),
        1114: pa.timestamp("us"),
        1184: pa.timestamp("us", tz="UTC"),
        17: pa.binary(),
    }
    return known.get(oid, pa.string())


def _arrow_values(values: tuple[Any, ...], kind: Any) -> list[Any]:
    import pyarrow as pa

    if kind != pa.string():
        return list(values)
    return [None if v is None else v if isinstance(v, str) else _text(v) for v in values]


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _write_schema(reading: _Reading, tables: list[_Table], out: _Hashing) -> None:
    """The DDL of the exported tables, by pg_dump in the export's own snapshot."""
    if not tables:
        out.write(b"-- the export holds query results only: no table definitions\n")
        return
    snapshot, connection = reading.snapshot, reading.connection
    argv = [
        reading.tools.program("pg_dump"),
        "--schema-only",
        "--no-owner",
        f"--snapshot={snapshot.snapshot_id}",
        *(f'--table="{t.schema}"."{t.name}"' for t in tables),
        "--no-password",
        f"--dbname={connection.dsn}",
    ]
    failed = Pipeline([("pg_dump", argv)], env=connection.client_env()).drain_into(out.write)
    if failed:
        raise ExportError(
            connection.redact(f"export of {connection.database!r}: pg_dump failed: {failed[2]}")
        )


# --- reading back -----------------------------------------------------------------------------
def read_export_manifest(store: ObjectStore, key: str) -> ExportManifest:
    with _downloaded(store, key) as path, zipfile.ZipFile(path) as archive:
        return ExportManifest.from_json(archive.read(MANIFEST))


def verify_export(store: ObjectStore, manifest: ExportManifest) -> list[str]:
    """Read the stored ZIP back: every file the manifest lists, with its row count and
    SHA-256, and nothing else; the problems found (none: it is the export that was made)."""
    problems: list[str] = []
    try:
        with _downloaded(store, manifest.object_key) as path, zipfile.ZipFile(path) as archive:
            stored = set(archive.namelist()) - {MANIFEST}
            expected = {f["name"]: f for f in manifest.files}
            problems += [f"{n}: missing" for n in sorted(expected.keys() - stored)]
            problems += [f"{n}: not in the manifest" for n in sorted(stored - expected.keys())]
            for name in sorted(stored & expected.keys()):
                problems += _file_problems(archive, expected[name], manifest.format)
    except (zipfile.BadZipFile, OSError, KeyError) as error:
        problems.append(f"{store.uri(manifest.object_key)} is not a readable ZIP: {error}")
    return problems


def _file_problems(archive: zipfile.ZipFile, expected: dict[str, Any], kind: str) -> list[str]:
    name = expected["name"]
    try:
        sha256, rows = _read_entry(archive, name, None if expected["rows"] is None else kind)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, csv.Error) as error:
        return [f"{name}: cannot be read: {error}"]
    problems = []
    if sha256 != expected["sha256"]:
        problems.append(f"{name}: SHA-256 differs from the manifest's")
    if rows != expected["rows"]:
        problems.append(f"{name}: {rows} rows, the manifest says {expected['rows']}")
    return problems


def _read_entry(archive: zipfile.ZipFile, name: str, kind: str | None) -> tuple[str, int | None]:
    """One file's SHA-256 and rows (None: `kind` None, a file of no rows). A CSV is read once:
    Python's csv module counts its records from the bytes as they are hashed, a parser of its
    own rather than the counter the export wrote with."""
    digest, rows = hashlib.sha256(), None
    with archive.open(name) as entry:
        hashed = io.BufferedReader(_Digesting(entry, digest), CHUNK_SIZE)
        if kind == "csv":
            text = io.TextIOWrapper(hashed, encoding="utf-8", newline="")
            rows = sum(1 for _ in csv.reader(text)) - 1  # the header
        while hashed.read(CHUNK_SIZE):
            pass
    if kind == "parquet":
        import pyarrow.parquet as pq

        with archive.open(name) as entry:
            rows = pq.ParquetFile(entry).metadata.num_rows
    return digest.hexdigest(), rows


class _Digesting(io.RawIOBase):
    """A stream that hashes whatever is read through it."""

    def __init__(self, stream: IO[bytes], digest: Any) -> None:
        self._stream, self._digest = stream, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        self._digest.update(memoryview(buffer)[:count])
        return count


@contextlib.contextmanager
def _downloaded(store: ObjectStore, key: str) -> Iterator[Path]:
    """The stored object in a temporary file: a ZIP is read from its end."""
    with tempfile.TemporaryDirectory(prefix="backup-pipelines-export-") as folder:
        path = Path(folder) / "export.zip"
        with path.open("wb") as target:
            for chunk in store.read_chunks(key):
                target.write(chunk)
        yield path
