"""Connections to a PostgreSQL server: connecting (with retries of transient failures),
and messages with the password removed.

Passwords reach libpq programs through the environment (PGPASSWORD), never argv, and every
message that leaves this module has them removed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import conninfo

CONNECT_TIMEOUT_SECONDS = 10
CONNECT_ATTEMPTS = 3

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


def scalar(conn: psycopg.Connection, query: str) -> object:
    """The one value a query answers."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def server_major_version(conn: psycopg.Connection) -> int:
    (number,) = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return int(number) // 10000
