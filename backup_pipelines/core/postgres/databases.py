"""Creating and dropping databases on a server (throw-away restore-test databases, restore
targets), with a comment that marks what this project created."""

from __future__ import annotations

import psycopg
from psycopg import sql

from backup_pipelines.core.common.postgres_client import PostgresError


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
