"""Named restore points: a moment an operator (or a deployment pipeline, before a migration)
marks by name, recoverable by that name once the WAL holding it is archived.

Recovery to a name stops at the first restore point of that name it replays, so a name may be
used once inside the recovery window; PostgreSQL itself limits a name to 63 bytes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import (
    archiver_status,
    require_archiving,
    wait_until_archived,
)
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import BackupSet
from backup_pipelines.core.servers.wal import lsn_number

MAX_NAME_BYTES = 63  # pg_create_restore_point refuses longer names (MAXFNAMELEN - 1)
MAX_NOTE_CHARACTERS = 500


@dataclass(frozen=True)
class RestorePoint:
    """A named restore point as it was made: where it is in the WAL and who asked for it."""

    server: str
    name: str
    lsn: str
    created_at: dt.datetime  # the server's clock when the point was written
    wal_segment: str  # the segment holding it, archived before the point was reported made
    requested_by: str
    note: str


def require_valid_name(server: str, name: str, taken: set[str]) -> None:
    """Refuse an empty, too long or reused name (recovery would stop at the older point)."""
    if not name.strip():
        raise PitrError(f"server {server!r}: a restore point needs a name (e.g. before-migration)")
    if name != name.strip() or any(not character.isprintable() for character in name):
        raise PitrError(
            f"server {server!r}: restore point name {name!r} has leading or trailing blanks or "
            "control characters; use letters, digits, '-', '_' or '.'"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise PitrError(
            f"server {server!r}: restore point name {name!r} is {len(name.encode())} bytes; "
            f"PostgreSQL allows at most {MAX_NAME_BYTES}"
        )
    if name in taken:
        raise PitrError(
            f"server {server!r}: a restore point named {name!r} already exists in the recovery "
            "window, and recovery by name stops at the first one; choose another name"
        )


def require_valid_note(server: str, note: str) -> None:
    if len(note) > MAX_NOTE_CHARACTERS:
        raise PitrError(
            f"server {server!r}: the restore point's note has {len(note)} characters; at most "
            f"{MAX_NOTE_CHARACTERS}"
        )


def create_restore_point(
    server: str,
    connection: Connection,
    name: str,
    *,
    requested_by: str,
    note: str = "",
    taken: set[str] | frozenset[str] = frozenset(),
) -> RestorePoint:
    """Write the restore point, switch the WAL segment and wait until the segment holding the
    point is archived: when this returns, a restore by `name` can reach it. `taken` are the
    names already in the window."""
    require_valid_name(server, name, set(taken))
    require_valid_note(server, note)
    require_archiving(server, archiver_status(connection))
    with connection.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT lsn::text, pg_walfile_name(lsn), clock_timestamp() "
            "FROM pg_create_restore_point(%s) AS lsn",
            (name,),
        ).fetchone()
        assert row is not None
        lsn, segment, created_at = row
        conn.execute("SELECT pg_switch_wal()")
    wait_until_archived(server, connection, segment)
    return RestorePoint(server, name, lsn, created_at, segment, requested_by, note)


def backup_before(backups: list[BackupSet], lsn: str) -> BackupSet | None:
    """The backup a restore to the point at `lsn` starts from: the newest that ends at or
    before it (recovery from a later one would never replay the point). None: the point's WAL
    has expired with the backups before it."""
    usable = [backup for backup in backups if lsn_number(backup.stop_lsn) <= lsn_number(lsn)]
    return usable[-1] if usable else None


def reachable_and_expired(
    points: list[RestorePoint], backups: list[BackupSet]
) -> tuple[list[RestorePoint], list[RestorePoint]]:
    """The points a restore can still reach by name, and those whose WAL has expired."""
    reachable = [point for point in points if backup_before(backups, point.lsn) is not None]
    return reachable, [point for point in points if point not in reachable]
