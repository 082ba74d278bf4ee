"""A server's globals (roles, memberships, tablespaces) dumped with pg_dumpall, streamed: what a
database's dump needs restored first onto a new server."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from backup_pipelines.core.common.client_tools import ClientTools
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.errors import PitrError


def dump_globals(connection: Connection, tools: ClientTools) -> Iterator[bytes]:
    """`pg_dumpall --globals-only` (roles, memberships, tablespaces), streamed; without role
    passwords unless the role may read them (a superuser)."""
    with connection.connect(autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    superuser = bool(row and row[0])
    argv = [tools.program("pg_dumpall"), "--globals-only", f"--dbname={connection.dsn}"]
    if not superuser:
        argv.append("--no-role-passwords")
    process = subprocess.Popen(
        argv,
        env=connection.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        while chunk := process.stdout.read(1 << 16):
            yield chunk
        error = process.stderr.read().decode(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
    if process.returncode != 0:
        raise PitrError(
            connection.redact(
                f"server {connection.database!r}: pg_dumpall --globals-only failed: {error.strip()}"
            )
        )
