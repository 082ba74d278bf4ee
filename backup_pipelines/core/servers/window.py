"""The recovery window: the moments a server can be restored to, from its base backups and the
WAL archive's continuity; which backup a restore to a moment starts from."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from backup_pipelines.core.common.postgres_client import Connection, PostgresError
from backup_pipelines.core.servers.archiver import ArchiverStatus, archiver_status
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import BackupSet, Engine, RepositoryInfo
from backup_pipelines.core.servers.wal import (
    DEFAULT_SEGMENT_SIZE,
    Continuity,
    Gap,
    Segment,
    Stretch,
    check_continuity,
    reachable_stretches,
    utc_text,
)


@dataclass(frozen=True)
class RecoveryWindow:
    """The moments a restore can reach: every moment inside one of its `stretches` (oldest
    first). A gap in the WAL archive splits the window; its `gaps` say which segments are
    missing and what they make unreachable."""

    stretches: tuple[Stretch, ...]
    gaps: tuple[Gap, ...] = ()

    @property
    def start(self) -> dt.datetime:
        return self.stretches[0].start

    @property
    def end(self) -> dt.datetime:
        return self.stretches[-1].end

    def contains(self, moment: dt.datetime) -> bool:
        return any(stretch.start <= moment <= stretch.end for stretch in self.stretches)

    def describe(self) -> str:
        return ", and ".join(f"{utc_text(s.start)} to {utc_text(s.end)}" for s in self.stretches)

    def between(self) -> str:
        return ", or ".join(
            f"between {utc_text(s.start)} and {utc_text(s.end)}" for s in self.stretches
        )

    def gap_before(self, moment: dt.datetime) -> Gap | None:
        """The gap that makes `moment` unreachable, if one does."""
        return next(
            (
                gap
                for gap in self.gaps
                if gap.reachable_until is None or gap.reachable_until < moment
                if gap.resumes_at is None or moment < gap.resumes_at
            ),
            None,
        )


def recovery_window(
    info: RepositoryInfo, end: dt.datetime | None, continuity: Continuity, segment_size: int
) -> RecoveryWindow | None:
    """The window from the backups, the archive's end (`end`: the last archived moment) and the
    gaps the repository's listing shows; None when no moment can be reached."""
    if not info.backups:
        return None
    newest = max(filter(None, [end, continuity.newest_archived_at, info.backups[-1].stopped]))
    stretches = reachable_stretches(info.backups, continuity.gaps, newest, segment_size)
    return RecoveryWindow(tuple(stretches), continuity.gaps) if stretches else None


@dataclass(frozen=True)
class ArchiveState:
    """A server's WAL archive as the repository lists it, and the window that follows."""

    continuity: Continuity
    window: RecoveryWindow | None
    end_lsn: int | None = None  # where the newest segment needed ends (None: none is known)


def observe_archive(
    engine: Engine, info: RepositoryInfo, status: ArchiverStatus | None
) -> ArchiveState:
    """Count the repository's WAL segments and derive the recovery window. Without the server
    (`status` None, the day of the disaster) the window ends at the newest archived segment."""
    segment_size = status.wal_segment_size if status else DEFAULT_SEGMENT_SIZE
    continuity = check_continuity(engine, info, segment_size)
    end = status.last_archived_time if status else None
    end_lsn = (
        (Segment.parse(continuity.newest, segment_size).number + 1) * segment_size
        if continuity.newest
        else None
    )
    window = recovery_window(info, end, continuity, segment_size)
    return ArchiveState(continuity, window, end_lsn)


def archive_state_for(engine: Engine, info: RepositoryInfo, source: Connection) -> ArchiveState:
    """The archive and its window, the end from the server's archiver; if the server is down
    (the day of the disaster), from the newest segment in the repository."""
    try:
        status: ArchiverStatus | None = archiver_status(source)
    except PostgresError:
        status = None
    return observe_archive(engine, info, status)


def window_for(engine: Engine, info: RepositoryInfo, source: Connection) -> RecoveryWindow | None:
    return archive_state_for(engine, info, source).window


def backup_for(backups: list[BackupSet], moment: dt.datetime) -> BackupSet | None:
    """The backup a restore to `moment` starts from: the newest one consistent before it."""
    usable = [backup for backup in backups if backup.stopped <= moment]
    return usable[-1] if usable else None


def unreachable_reason(
    window: RecoveryWindow | None, backups: list[BackupSet], moment: dt.datetime
) -> str | None:
    """Why a restore cannot reach `moment` (None: it can): no backup yet, after the archived
    WAL, in a gap, while the only backup that could reach it was still being taken, or before
    every kept backup."""
    if window is None:
        return "it has no base backup it can be restored from yet: take one first"
    if window.contains(moment):
        return None
    if moment > window.end:
        return f"it lies after the newest archived WAL ({utc_text(window.end)})"
    gap = window.gap_before(moment) if window.start <= moment else None
    if gap is not None:
        return f"it lies in a gap of the WAL archive ({gap.describe()})"
    taking = next((b for b in backups if b.started <= moment < b.stopped), None)
    if taking is not None:
        return (
            f"it lies while base backup {taking.label} was being taken ({utc_text(taking.started)}"
            f" to {utc_text(taking.stopped)}): that backup is consistent only from its end, and "
            "no older kept backup reaches the moment"
        )
    return (
        f"it lies before the oldest kept base backup is consistent ({utc_text(window.start)}); "
        "the WAL before it has expired"
    )


def require_in_window(
    server: str, window: RecoveryWindow | None, backups: list[BackupSet], moment: dt.datetime
) -> None:
    reason = unreachable_reason(window, backups, moment)
    if reason is None:
        return
    reachable = f"; reachable: {window.describe()}, choose a time there" if window else ""
    raise PitrError(
        f"server {server!r} cannot be restored to {utc_text(moment)}: {reason}{reachable}"
    )


@dataclass(frozen=True)
class Span:
    """A stretch of time on a server's timeline: a restore to any moment in it starts from
    `backup`, or (backup None) cannot be made, for `reason`."""

    start: dt.datetime
    end: dt.datetime
    backup: BackupSet | None
    reason: str | None


def recovery_spans(window: RecoveryWindow | None, backups: list[BackupSet]) -> list[Span]:
    """The timeline from the oldest kept backup's start to the window's end, cut where the
    backup a restore starts from, or the reason it cannot, changes."""
    if window is None or not backups:
        return []
    cuts = sorted(
        {
            moment
            for moment in [
                *(b.started for b in backups),
                *(b.stopped for b in backups),
                *(s.start for s in window.stretches),
                *(s.end for s in window.stretches),
            ]
            if moment <= window.end
        }
    )
    spans: list[Span] = []
    for start, end in itertools.pairwise(cuts):
        middle = start + (end - start) / 2
        reason = unreachable_reason(window, backups, middle)
        backup = None if reason else backup_for(backups, middle)
        if spans and (spans[-1].backup, spans[-1].reason) == (backup, reason):
            spans[-1] = Span(spans[-1].start, end, backup, reason)
        else:
            spans.append(Span(start, end, backup, reason))
    return spans


def window_metadata(window: RecoveryWindow | None) -> dict[str, object]:
    if window is None:
        return {"recovery_window": "none: no base backup can be restored from yet"}
    metadata: dict[str, object] = {
        "recovery_window": f"you can restore to any moment {window.between()}",
        "recovery_window_start": utc_text(window.start),
        "recovery_window_end": utc_text(window.end),
    }
    if window.gaps:
        metadata["recovery_window_stretches"] = [
            f"{utc_text(stretch.start)} to {utc_text(stretch.end)}" for stretch in window.stretches
        ]
        metadata["wal_gaps"] = [gap.describe() for gap in window.gaps]
    return metadata
