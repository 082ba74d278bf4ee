"""What a database holds, read from its catalog inside one exported snapshot: the relations
whose data a dump writes, their row counts, constraints and sequences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from backup_pipelines.core.common.postgres_client import Connection, PostgresError

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
