"""Everything that talks to a PostgreSQL server or its client programs.

Passwords reach libpq programs through the environment (PGPASSWORD), never argv, and every
message that leaves this module has them removed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import conninfo, sql

CONNECT_TIMEOUT_SECONDS = 10
CONNECT_ATTEMPTS = 3
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")

T = TypeVar("T")


class PostgresError(RuntimeError):
    """A database could not be backed up or restored; the message says which and why."""


@dataclass(frozen=True)
class Connection:
    """Where a database lives, with its password kept apart from everything printable."""

    database: str  # the configured name, used in messages
    params: dict[str, str]
    password: str | None

    @classmethod
    def from_url(cls, database: str, url: str) -> Connection:
        try:
            params = conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise PostgresError(
                f"database {database!r}: url is not a valid libpq URL or connection string"
            ) from None
        password = params.pop("password", None)
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
        return cls(database, {k: str(v) for k, v in params.items()}, password)

    @property
    def dsn(self) -> str:
        """The connection string without the password: safe for argv and messages."""
        return conninfo.make_conninfo(**self.params)

    @property
    def server(self) -> str:
        host = self.params.get("host", "localhost")
        return f"{host}:{self.params.get('port', '5432')}"

    def for_database(self, name: str) -> Connection:
        """The same server and credentials, connected to another database."""
        return Connection(self.database, {**self.params, "dbname": name}, self.password)

    def with_setting(self, name: str, value: str) -> Connection:
        """The same connection with a server setting for its sessions (libpq `options`)."""
        options = " ".join(filter(None, [self.params.get("options"), f"-c {name}={value}"]))
        return Connection(self.database, {**self.params, "options": options}, self.password)

    def client_env(self) -> dict[str, str]:
        """Environment for pg_dump/pg_restore/psql: the password goes here, not on argv."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def redact(self, text: str) -> str:
        return redact(text, [self.password])

    def connect(self, **kwargs: object) -> psycopg.Connection:
        """Connect, retrying refused connections and time-outs a few times with backoff."""
        return retry_transient(
            lambda: psycopg.connect(self.dsn, password=self.password, **kwargs),
            describe=self.describe_error,
        )

    def describe_error(self, error: BaseException) -> str:
        message = str(error).strip() or type(error).__name__
        return self.redact(f"database {self.database!r} at {self.server}: {message}")


def redact(text: str, secrets: list[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


_TRANSIENT_MARKERS = ("connection refused", "timeout expired", "could not connect", "timed out")


def _is_transient(error: psycopg.OperationalError) -> bool:
    message = str(error).lower()
    return any(marker in message for marker in _TRANSIENT_MARKERS) and (
        "password" not in message and "does not exist" not in message
    )


def retry_transient(attempt: Callable[[], T], *, describe: Callable[[BaseException], str]) -> T:
    """Run `attempt`, retrying network failures; a dead server still fails in under a minute."""
    for number in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return attempt()
        except psycopg.OperationalError as error:
            if number == CONNECT_ATTEMPTS or not _is_transient(error):
                raise PostgresError(describe(error)) from None
            time.sleep(2**number)
    raise AssertionError("unreachable")


# --- client programs -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTools:
    bin_dir: Path
    major_version: int

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)


def major_version_of(program: Path) -> int:
    """The major version a PostgreSQL program (pg_dump, postgres, ...) reports."""
    output = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if not match:
        raise PostgresError(f"cannot read the version of {program} from {output!r}")
    return int(match.group(1))


def find_client_tools(pg_bin_dir: str | None, server_major: int | None = None) -> ClientTools:
    """pg_dump/pg_restore from `pg_bin_dir`, else the Debian version folders, else PATH.

    Among installed versions the oldest one that is not older than the server is chosen,
    so each server is dumped by a matching client where one is installed.
    """
    if pg_bin_dir:
        candidates = [Path(pg_bin_dir)]
        if not (candidates[0] / "pg_dump").exists():
            raise PostgresError(
                f"pg_bin_dir: {pg_bin_dir} has no pg_dump; point it at a PostgreSQL bin folder"
            )
    else:
        versioned = sorted(
            (p for p in DEBIAN_PG_ROOT.glob("*/bin") if (p / "pg_dump").exists()),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        on_path = shutil.which("pg_dump")
        candidates = versioned or ([Path(on_path).parent] if on_path else [])
    if not candidates:
        raise PostgresError(
            "pg_dump was not found: install the PostgreSQL client (e.g. postgresql-client-15) "
            "or set pg_bin_dir in the configuration"
        )
    tools = [ClientTools(path, major_version_of(path / "pg_dump")) for path in candidates]
    if server_major is not None:
        suitable = [t for t in tools if t.major_version >= server_major]
        if suitable:
            return min(suitable, key=lambda t: t.major_version)
    return max(tools, key=lambda t: t.major_version)


def require_pg_dump_for(tools: ClientTools, server_major: int, database: str) -> None:
    if tools.major_version < server_major:
        raise PostgresError(
            f"database {database!r}: the server runs PostgreSQL {server_major} but the newest "
            f"pg_dump found is version {tools.major_version} ({tools.bin_dir}); pg_dump "
            f"{server_major} or newer is needed: install postgresql-client-{server_major} "
            "or set pg_bin_dir"
        )


# --- what a snapshot holds -------------------------------------------------------------------

# Relations whose data pg_dump writes as a TABLE DATA / MATERIALIZED VIEW DATA entry: tables
# and leaf partitions (relkind r) and populated materialized views (m), outside the system
# schemas and not owned by an extension.
_DATA_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND c.relpersistence <> 't'
  AND (c.relkind <> 'm' OR c.relispopulated)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

# Foreign keys and check constraints declared on each table itself; those a partition
# inherits from its parent are recreated with the parent's and are not listed twice.
_CONSTRAINTS = """
SELECT n.nspname, c.relname, con.conname, con.contype, con.convalidated
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('f', 'c') AND con.conislocal AND con.conparentid = 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""

_SEQUENCES = """
SELECT schemaname, sequencename, last_value FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""


@dataclass(frozen=True)
class RelationCount:
    oid: int
    schema: str
    name: str
    kind: str  # "table" or "materialized view"
    rows: int

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


CONSTRAINT_KINDS = {"f": "foreign key", "c": "check"}


@dataclass(frozen=True)
class TableConstraint:
    schema: str
    table: str
    name: str
    kind: str  # "foreign key" or "check"
    validated: bool


@dataclass(frozen=True)
class SnapshotContents:
    relations: list[RelationCount]
    sequences: dict[str, int | None]
    constraints: list[TableConstraint]


def read_data_relations(cursor: psycopg.Cursor) -> list[tuple[int, str, str, str]]:
    """(oid, schema, name, relkind) of every relation whose rows pg_dump writes."""
    return cursor.execute(_DATA_RELATIONS).fetchall()


def read_constraints(cursor: psycopg.Cursor) -> list[TableConstraint]:
    return [
        TableConstraint(schema, table, name, CONSTRAINT_KINDS[kind], validated)
        for schema, table, name, kind, validated in cursor.execute(_CONSTRAINTS)
    ]


def read_sequences(cursor: psycopg.Cursor) -> dict[str, int | None]:
    return {f"{schema}.{name}": last for schema, name, last in cursor.execute(_SEQUENCES)}


def count_rows(cursor: psycopg.Cursor, schema: str, name: str) -> int:
    query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
        sql.Identifier(schema), sql.Identifier(name)
    )
    (rows,) = cursor.execute(query).fetchone()
    return int(rows)


@dataclass(frozen=True)
class ExportedSnapshot:
    snapshot_id: str
    taken_at: dt.datetime
    server_version: str
    server_major: int
    database_name: str  # current_database(): what pg_dump's archive header will name
    connection: psycopg.Connection

    def data_relations(self) -> list[tuple[int, str, str, str]]:
        with self.connection.cursor() as cursor:
            return read_data_relations(cursor)

    def count_rows(self, relations: list[tuple[str, str]]) -> list[int]:
        """Exact row counts of (schema, name) relations, read inside the exported snapshot."""
        with self.connection.cursor() as cursor:
            return [count_rows(cursor, schema, name) for schema, name in relations]

    def contents(
        self, relations: list[tuple[int, str, str, str]], rows: Mapping[tuple[str, str], int]
    ) -> SnapshotContents:
        """The dumped `relations` with their `rows`, and the snapshot's sequences and
        constraints; a relation without a count is named."""
        counts = []
        for oid, schema, name, relkind in relations:
            kind = "materialized view" if relkind == "m" else "table"
            if (schema, name) not in rows:
                raise PostgresError(
                    f"{kind} {schema}.{name} is in the snapshot but the dump holds no rows for it"
                )
            counts.append(RelationCount(oid, schema, name, kind, rows[(schema, name)]))
        with self.connection.cursor() as cursor:
            return SnapshotContents(counts, read_sequences(cursor), read_constraints(cursor))


@contextmanager
def exported_snapshot(connection: Connection) -> Iterator[ExportedSnapshot]:
    """Hold a repeatable-read transaction open and export its snapshot for pg_dump."""
    conn = connection.connect(autocommit=False)
    try:
        with conn.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot_id, taken_at, version, version_num, name = cursor.execute(
                "SELECT pg_export_snapshot(), clock_timestamp(), "
                "current_setting('server_version'), current_setting('server_version_num')::int, "
                "current_database()"
            ).fetchone()
        yield ExportedSnapshot(
            snapshot_id, taken_at.astimezone(dt.UTC), version, version_num // 10000, name, conn
        )
    except psycopg.Error as error:
        raise PostgresError(connection.describe_error(error)) from None
    finally:
        conn.close()


# --- creating and dropping databases ----------------------------------------------------------


def scalar(conn: psycopg.Connection, query: str) -> object:
    """The one value a query answers."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def server_major_version(conn: psycopg.Connection) -> int:
    (number,) = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return int(number) // 10000


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_database(conn: psycopg.Connection, name: str, comment: str | None = None) -> None:
    """CREATE DATABASE from template0 (a clean copy for pg_restore); `conn` is autocommit."""
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    if comment:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(comment)
            )
        )


_DROP_ATTEMPTS = 3


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """DROP DATABASE IF EXISTS, first ending this role's own sessions in it (e.g. the workers
    of a cancelled pg_restore). Not WITH (FORCE): for a role without superuser that fails while
    autovacuum works in the database, whereas a plain DROP makes autovacuum step aside."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    for _ in range(_DROP_ATTEMPTS):
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            conn.execute(statement)
            return
        except psycopg.errors.ObjectInUse:
            continue
    raise PostgresError(f"cannot drop database {name!r}: sessions of other roles keep using it")


def drop_database_if_unused(conn: psycopg.Connection, name: str) -> bool:
    """Drop `name` only if nobody is connected to it; True if it was dropped."""
    in_use = conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s", (name,))
    if in_use.fetchone():
        return False
    try:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except psycopg.errors.ObjectInUse:
        return False
    return True


# --- pg_restore --list -----------------------------------------------------------------------

_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.+)$")
_TOC_DBNAME = re.compile(r"^;\s+dbname: (.*)$")
_DATA_ENTRY_KINDS = ("TABLE DATA ", "MATERIALIZED VIEW DATA ")


@dataclass(frozen=True)
class TableOfContents:
    entries: int
    data_oids: frozenset[int]  # source OIDs of relations whose data the archive holds
    dumped_database: str | None = None  # the header's "dbname": the database pg_dump read


def parse_toc(listing: str) -> TableOfContents:
    entries = 0
    data_oids: set[int] = set()
    dumped_database = None
    for line in listing.splitlines():
        header = _TOC_DBNAME.match(line)
        if header and dumped_database is None:
            dumped_database = header.group(1)
        match = _TOC_LINE.match(line)
        if not match:
            continue
        entries += 1
        if match.group(4).startswith(_DATA_ENTRY_KINDS):
            data_oids.add(int(match.group(3)))
    return TableOfContents(entries, frozenset(data_oids), dumped_database)


def relations_missing_data(
    toc: TableOfContents, relations: list[RelationCount]
) -> list[RelationCount]:
    """Relations that held rows in the snapshot but have no data entry in the archive."""
    return [r for r in relations if r.rows > 0 and r.oid not in toc.data_oids]
