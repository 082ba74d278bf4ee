"""Taking a base backup: refuse a server that does not archive its WAL, create the stanza on the
first backup, choose the kind, back up, verify the repository and observe the WAL archive (the
window the new backup opens)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import archiver_status, require_archiving
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import (
    BACKUP_KINDS,
    NO_STANZA,
    BackupSet,
    Engine,
    RepositoryInfo,
)
from backup_pipelines.core.servers.window import ArchiveState, observe_archive

AUTO = "auto"


@dataclass(frozen=True)
class BaseBackupReport:
    """A base backup taken, the repository after it, what verifying it found and the archive."""

    backup: BackupSet
    info: RepositoryInfo
    problems: list[str]  # what pgbackrest verify reported; none when the repository is intact
    verify_seconds: float
    archive: ArchiveState


def backup_kind(info: RepositoryInfo, full_today: bool) -> str:
    """Full when the full-backup schedule falls on the day or no full backup exists; else a
    differential against the newest full."""
    has_full = any(backup.kind == "full" for backup in info.backups)
    return "full" if full_today or not has_full else "diff"


def choose_kind(server: str, requested: str, info: RepositoryInfo, full_today: bool) -> str:
    """`auto` (by the schedule, see `backup_kind`) or a kind forced by the operator."""
    if requested == AUTO:
        return backup_kind(info, full_today)
    if requested not in BACKUP_KINDS:
        raise PitrError(
            f"server {server!r}: backup kind {requested!r} is not {AUTO}, {', '.join(BACKUP_KINDS)}"
        )
    return requested


def take_base_backup(
    engine: Engine,
    connection: Connection,
    requested_kind: str,
    full_today: bool,
    announce: Callable[[str], None],
) -> BaseBackupReport:
    """Back up `engine`'s server (creating its stanza first if the repository has none), then
    verify the repository and count the WAL archive. `announce` hears the kind before the
    backup starts (a full backup of a big server takes long)."""
    require_archiving(engine.server, archiver_status(connection))
    before = engine.info()
    if before.status == NO_STANZA:
        engine.create_stanza()
        before = engine.info()
    kind = choose_kind(engine.server, requested_kind, before, full_today)
    announce(f"taking a {kind} backup of server {engine.server!r}")
    backup, info = engine.backup(kind, before)
    verify_started = time.monotonic()
    problems = engine.verify()
    verify_seconds = time.monotonic() - verify_started
    archive = observe_archive(engine, info, archiver_status(connection))
    return BaseBackupReport(backup, info, problems, verify_seconds, archive)
