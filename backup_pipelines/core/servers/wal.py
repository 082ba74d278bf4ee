"""The WAL archive's continuity, counted from the repository's own listing: which segments a
recovery from the oldest kept backup needs (per timeline, following the history files), which
of them are missing, and which moments stay reachable around a gap.

`pgbackrest verify` exits 0 for a gap that no backup needs for consistency (pgBackRest 2.45), so
its exit status proves nothing about continuity; this module counts the segments itself, as
WAL-G's `wal-verify` and check_pgbackrest's `archives` service do.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backup_pipelines.core.common.client_tools import DEBIAN_PG_ROOT
from backup_pipelines.core.servers.pgbackrest import BackupSet, Engine, RepositoryInfo

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}(\.[a-z0-9]+)?$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_DECOMPRESS = {
    ".zst": ["zstd", "-dcq"],
    ".gz": ["gzip", "-dc"],
    ".bz2": ["bzip2", "-dc"],
    ".lz4": ["lz4", "-dc"],
}
_COMMIT = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
_LOOK_BACK = 4  # segments searched for the last commit before a gap


def lsn_number(text: str) -> int:
    """A WAL position ('16/B374D848') as a number, for comparing and subtracting."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True)
class Segment:
    """A WAL segment: its timeline and its number counted from the start of WAL."""

    timeline: int
    number: int

    @classmethod
    def parse(cls, name: str, segment_size: int) -> Segment:
        per_log = 0x100000000 // segment_size
        return cls(int(name[:8], 16), int(name[8:16], 16) * per_log + int(name[16:24], 16))

    def name(self, segment_size: int) -> str:
        per_log = 0x100000000 // segment_size
        log, seg = divmod(self.number, per_log)
        return f"{self.timeline:08X}{log:08X}{seg:08X}"


@dataclass(frozen=True)
class Gap:
    """Consecutive segments a recovery needs that the repository does not hold."""

    first: str
    last: str
    count: int
    first_number: int
    last_number: int
    reachable_until: dt.datetime | None = None  # the last commit recovery can reach before it
    approximate: bool = False  # reachable_until from the archive time: pg_waldump was missing
    resumes_at: dt.datetime | None = None  # the first backup after it is consistent here

    def segments(self) -> str:
        return (
            f"segment {self.first}"
            if self.count == 1
            else f"{self.count} segments {self.first} to {self.last}"
        )

    def unreachable(self) -> str:
        """The stretch of time this gap makes unreachable."""
        start = utc_text(self.reachable_until) if self.reachable_until else "the oldest backup"
        if self.approximate:
            start += " (approximate: when the segment before it was archived; pg_waldump missing)"
        end = (
            f"{utc_text(self.resumes_at)} (the first backup after it)"
            if self.resumes_at
            else "the newest archived WAL (no backup was taken after it)"
        )
        return f"moments after {start} up to {end} cannot be reached"

    def describe(self) -> str:
        return f"{self.segments()} missing: {self.unreachable()}"


@dataclass(frozen=True)
class Continuity:
    """What the repository holds against what a recovery from the oldest backup needs."""

    start: str | None  # the first segment the oldest kept backup needs
    newest: str | None  # the newest segment needed (archived or named by a backup)
    needed: int  # segments from start to newest along the timeline chain
    timelines: tuple[int, ...]
    gaps: tuple[Gap, ...]
    newest_archived_at: dt.datetime | None  # when the newest segment was stored
    first_archived_at: dt.datetime | None = None  # when the repository's oldest file was stored
    newest_stored: str | None = None  # the newest segment the repository lists (any backup)
    newest_stored_at: dt.datetime | None = None  # when it was stored

    @property
    def missing(self) -> int:
        """Segments needed and not in the repository."""
        return sum(gap.count for gap in self.gaps)


@dataclass(frozen=True)
class Stretch:
    start: dt.datetime
    end: dt.datetime


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file's (parent timeline, LSN where the child branched) lines."""
    branches = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#"):
            high, low = fields[1].split("/")
            branches.append((int(fields[0]), (int(high, 16) << 32) + int(low, 16)))
    return branches


def timeline_of(number: int, chain: list[tuple[int, int, int | None]]) -> int:
    """The timeline that holds segment `number` on the chain [(timeline, first, end)]."""
    for timeline, first, end in chain:
        if first <= number and (end is None or number < end):
            return timeline
    return chain[-1][0]


def check_continuity(engine: Engine, info: RepositoryInfo, segment_size: int) -> Continuity:
    """Read the repository's listing and find every segment from the oldest backup's start to
    the newest archived one that is not there, on the newest timeline's chain."""
    files = engine.archive_files(info.archive_id) if info.archive_id else {}
    archived: dict[Segment, tuple[str, dt.datetime]] = {}
    histories: dict[int, str] = {}
    for path, stored in files.items():
        name = PurePosixPath(path).name
        if _SEGMENT.match(name):
            archived[Segment.parse(name[:24], segment_size)] = (path, stored)
        elif match := _HISTORY.match(name):
            histories[int(match.group(1), 16)] = path
    first_archived_at = min(files.values(), default=None)
    stored = max(archived, key=lambda s: (s.timeline, s.number), default=None)
    listed = {
        "first_archived_at": first_archived_at,
        "newest_stored": stored.name(segment_size) if stored else None,
        "newest_stored_at": archived[stored][1] if stored else None,
    }
    if not info.backups:
        return Continuity(None, None, 0, (), (), None, **listed)
    newest_timeline = max((s.timeline for s in archived), default=1)
    chain = _chain(engine, newest_timeline, histories.get(newest_timeline), segment_size)
    oldest = Segment.parse(info.backups[0].wal_start, segment_size)
    stops = [Segment.parse(b.wal_stop, segment_size).number for b in info.backups]
    newest = max([s.number for s in archived if s.timeline == newest_timeline] + stops)
    needed = [Segment(timeline_of(n, chain), n) for n in range(oldest.number, newest + 1)]
    missing = [segment.number for segment in needed if segment not in archived]
    gaps = [_gap(run, chain, segment_size, archived, engine, info) for run in _runs(missing)]
    newest_segment = Segment(timeline_of(newest, chain), newest)
    return Continuity(
        start=oldest.name(segment_size),
        newest=newest_segment.name(segment_size),
        needed=len(needed),
        timelines=tuple(sorted({segment.timeline for segment in needed})),
        gaps=tuple(gaps),
        newest_archived_at=archived[newest_segment][1] if newest_segment in archived else None,
        **listed,
    )


def _chain(
    engine: Engine, timeline: int, history_path: str | None, segment_size: int
) -> list[tuple[int, int, int | None]]:
    """[(timeline, first segment, end segment)] from timeline 1 (or the oldest in the history)
    to `timeline`: a child starts at the segment holding its branch point."""
    branches: list[tuple[int, int]] = []
    if history_path is not None:
        with tempfile.TemporaryDirectory(prefix="backup-pipelines-history-") as folder:
            local = Path(folder) / "history"
            engine.give(Path(folder))
            engine.copy_out(history_path, local)
            branches = parse_history(local.read_text())
    chain: list[tuple[int, int, int | None]] = []
    first = 0
    for parent, lsn in branches:
        switch = lsn // segment_size
        chain.append((parent, first, switch))
        first = switch
    chain.append((timeline, first, None))
    return chain


def _runs(numbers: list[int]) -> Iterable[tuple[int, int]]:
    """Consecutive runs of `numbers` (sorted) as (first, last)."""
    start = previous = None
    for number in numbers:
        if previous is not None and number != previous + 1:
            yield start, previous
            start = None
        if start is None:
            start = number
        previous = number
    if start is not None:
        yield start, previous


def _gap(
    run: tuple[int, int],
    chain: list[tuple[int, int, int | None]],
    segment_size: int,
    archived: Mapping[Segment, tuple[str, dt.datetime]],
    engine: Engine,
    info: RepositoryInfo,
) -> Gap:
    first, last = run
    before = [
        archived[segment]
        for n in range(first - 1, max(first - 1 - _LOOK_BACK, -1), -1)
        if (segment := Segment(timeline_of(n, chain), n)) in archived
    ]
    until, approximate = _last_commit(engine, info, before)
    resumes = next(
        (b.stopped for b in info.backups if Segment.parse(b.wal_start, segment_size).number > last),
        None,
    )
    return Gap(
        first=Segment(timeline_of(first, chain), first).name(segment_size),
        last=Segment(timeline_of(last, chain), last).name(segment_size),
        count=last - first + 1,
        first_number=first,
        last_number=last,
        reachable_until=until,
        approximate=approximate,
        resumes_at=resumes,
    )


def _last_commit(
    engine: Engine, info: RepositoryInfo, before: list[tuple[str, dt.datetime]]
) -> tuple[dt.datetime | None, bool]:
    """The last commit (or abort) recorded in the segments just before a gap, newest first: a
    recovery to a later moment runs out of WAL before it finds a commit after its target."""
    waldump = _waldump(info.major_version)
    if waldump is None:
        return (before[0][1] if before else None), True
    for path, _ in before:
        moment = _last_commit_in(engine, path, waldump)
        if moment is not None:
            return moment, False
    return None, False


def _waldump(major: int | None) -> Path | None:
    program = DEBIAN_PG_ROOT / str(major) / "bin" / "pg_waldump"
    return program if major and program.exists() else None


def _last_commit_in(engine: Engine, path: str, waldump: Path) -> dt.datetime | None:
    name = PurePosixPath(path).name
    suffix = PurePosixPath(name).suffix
    with tempfile.TemporaryDirectory(prefix="backup-pipelines-wal-") as folder:
        stored = Path(folder) / "stored"
        engine.copy_out(path, stored)
        segment = Path(folder) / name[:24]
        with stored.open("rb") as source, segment.open("wb") as out:
            if suffix not in _DECOMPRESS:
                shutil.copyfileobj(source, out)
            elif subprocess.run(_DECOMPRESS[suffix], stdin=source, stdout=out).returncode != 0:
                return None  # unreadable: the segments before it are read instead
        done = subprocess.run(
            [str(waldump), "--rmgr=Transaction", str(segment)],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
        )
    commits = _COMMIT.findall(done.stdout)
    if not commits:
        return None
    return dt.datetime.fromisoformat(commits[-1]).replace(tzinfo=dt.UTC)


def reachable_stretches(
    backups: list[BackupSet], gaps: tuple[Gap, ...], end: dt.datetime, segment_size: int
) -> list[Stretch]:
    """The moments a restore can reach: from each backup's consistency point to the end of the
    WAL that follows it without a gap (or the archive's end); a backup whose own WAL has a gap
    reaches nothing. Overlapping stretches are merged."""
    stretches: list[Stretch] = []
    for backup in backups:
        start = Segment.parse(backup.wal_start, segment_size).number
        stop = Segment.parse(backup.wal_stop, segment_size).number
        gap = next((g for g in gaps if g.last_number >= start), None)
        if gap is not None and gap.first_number <= stop:
            continue
        reach = end if gap is None else gap.reachable_until
        if reach is not None and reach >= backup.stopped:
            stretches.append(Stretch(backup.stopped, reach))
    merged: list[Stretch] = []
    for stretch in sorted(stretches, key=lambda s: s.start):
        if merged and stretch.start <= merged[-1].end:
            merged[-1] = Stretch(merged[-1].start, max(merged[-1].end, stretch.end))
        else:
            merged.append(stretch)
    return merged


def utc_text(moment: dt.datetime, timespec: str = "seconds") -> str:
    return moment.astimezone(dt.UTC).isoformat(sep=" ", timespec=timespec)
