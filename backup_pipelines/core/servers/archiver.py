"""A server's WAL archiving as PostgreSQL reports it (pg_stat_archiver and the settings): is it
on, is it failing, how far behind is it, and waiting for a segment to reach the repository."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.wal import DEFAULT_SEGMENT_SIZE, Continuity

ARCHIVE_WAIT_SECONDS = 120

_ARCHIVER = """
SELECT current_setting('archive_mode'), current_setting('wal_level'),
       current_setting('archive_command'),
       (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'),
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time, a.stats_reset,
       clock_timestamp(), pg_walfile_name(pg_current_wal_lsn()),
       (pg_walfile_name_offset(pg_current_wal_lsn())).file_offset,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
FROM pg_stat_archiver a
"""


@dataclass(frozen=True)
class ArchiveLag:
    """How far one archive (`where`: the server's archive, or one repository of two) is behind
    the WAL the server writes: `seconds` is the measured RPO."""

    seconds: float
    newest_wal: str | None  # the newest segment there
    newest_at: dt.datetime | None  # when it was stored
    current_wal: str  # the segment the server is writing
    where: str


@dataclass(frozen=True)
class ArchiverStatus:
    """What pg_stat_archiver and the settings say about a server's WAL archiving."""

    archive_mode: str
    wal_level: str
    archive_command: str
    archive_timeout_seconds: int
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: dt.datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: dt.datetime | None
    stats_reset: dt.datetime
    measured_at: dt.datetime
    current_wal: str
    current_wal_offset: int
    wal_segment_size: int = DEFAULT_SEGMENT_SIZE

    def lag(self) -> ArchiveLag:
        """The archive lag pg_stat_archiver shows: since the last successful archive_command."""
        return self.lag_behind(self.last_archived_wal, self.last_archived_time, "the archive")

    def lag_behind(
        self, newest: str | None, newest_at: dt.datetime | None, where: str
    ) -> ArchiveLag:
        """How old the oldest WAL not yet in an archive is, at most (the measured RPO), when
        `newest` is the newest segment there, stored at `newest_at`: 0 when everything up to
        the segment being written is there and nothing has been written into that segment yet;
        else the time since `newest_at` (with nothing stored, since the statistics reset)."""
        since = newest_at or self.stats_reset
        caught_up = (
            newest is not None
            and _next_segment(newest) == self.current_wal
            and self.current_wal_offset == 0
        )
        seconds = 0.0 if caught_up else max((self.measured_at - since).total_seconds(), 0.0)
        return ArchiveLag(seconds, newest, newest_at, self.current_wal, where)

    @property
    def failing(self) -> bool:
        """The newest archive attempt failed (a failure after the last success)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


def repository_lag(status: ArchiverStatus, continuity: Continuity, where: str) -> ArchiveLag:
    """One repository's lag, of two: from the newest segment it lists and when it was stored.
    pg_stat_archiver counts a segment archived only once every repository has it, so it cannot
    say which one is behind, nor that the other still receives WAL."""
    return status.lag_behind(continuity.newest_stored, continuity.newest_stored_at, where)


def _next_segment(name: str) -> str:
    timeline, log, seg = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    seg += 1
    if seg > 0xFF:
        log, seg = log + 1, 0
    return f"{timeline}{log:08X}{seg:08X}"


def archiver_status(connection: Connection) -> ArchiverStatus:
    with connection.connect(autocommit=True) as conn:
        row = conn.execute(_ARCHIVER).fetchone()
    assert row is not None
    return ArchiverStatus(*row)


def require_archiving(server: str, status: ArchiverStatus) -> None:
    """Refuse a server whose WAL is not archived: a base backup of it could not be recovered
    to any moment but its own end."""
    problems = []
    if status.archive_mode not in ("on", "always"):
        problems.append(f"archive_mode is {status.archive_mode!r} (set archive_mode = on)")
    if status.wal_level not in ("replica", "logical"):
        problems.append(f"wal_level is {status.wal_level!r} (set wal_level = replica)")
    if "archive-push" not in status.archive_command:
        problems.append(
            f"archive_command is {status.archive_command or 'empty'!r}, not pgBackRest's "
            "archive-push (set archive_command = 'pgbackrest --stanza=<stanza> archive-push %p')"
        )
    if problems:
        raise PitrError(
            f"server {server!r} does not archive its WAL: {'; '.join(problems)}; then restart "
            "PostgreSQL"
        )


def wait_until_archived(
    server: str, connection: Connection, segment: str, timeout: float = ARCHIVE_WAIT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = archiver_status(connection)
        if status.last_archived_wal and status.last_archived_wal[8:] >= segment[8:]:
            return
        if time.monotonic() > deadline:
            raise PitrError(
                f"server {server!r}: WAL segment {segment} was not archived within {timeout:.0f}"
                f" s (last archived: {status.last_archived_wal or 'none'}, failed attempts: "
                f"{status.failed_count}); archive_command is not pushing to the repository"
            )
        time.sleep(0.5)
