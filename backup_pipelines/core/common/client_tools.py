"""PostgreSQL's client and server programs on this machine: which version folder serves a
server, and the version a program reports."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from backup_pipelines.core.common.postgres_client import PostgresError

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


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
