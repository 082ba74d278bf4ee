"""WAL segment arithmetic, timeline history and the reachable stretches around a gap, from
made-up repository listings (a real gap is in integration/test_wal_gaps.py)."""

import datetime as dt

import pytest

from backup_pipelines.core.servers import wal
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import BackupSet
from backup_pipelines.core.servers.window import (
    RecoveryWindow,
    backup_for,
    recovery_spans,
    require_in_window,
)

SERVER = "main"
MIB16 = 16 * 1024 * 1024
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def test_segment_names_follow_the_segment_size():
    for size in (MIB16, 64 * 1024 * 1024, 1024 * 1024):
        name = "00000002000000010000000F"
        segment = wal.Segment.parse(name, size)
        assert segment.timeline == 2 and segment.name(size) == name
    # 16 MiB: 256 segments per log, so ...FF is followed by the next log's 00.
    after = wal.Segment(1, wal.Segment.parse("0000000100000000000000FF", MIB16).number + 1)
    assert after.name(MIB16) == "000000010000000100000000"
    # 64 MiB: 64 segments per log.
    after = wal.Segment(1, wal.Segment.parse("00000001000000000000003F", 64 << 20).number + 1)
    assert after.name(64 << 20) == "000000010000000100000000"


def test_history_files_give_the_timeline_chain():
    history = "1\t0/5000000\tno recovery target specified\n\n2\t0/9000000\tbefore 2026-12-01\n"
    assert wal.parse_history(history) == [(1, 0x5000000), (2, 0x9000000)]
    chain = [(1, 0, 5), (2, 5, 9), (3, 9, None)]
    assert [wal.timeline_of(n, chain) for n in (0, 4, 5, 8, 9, 40)] == [1, 1, 2, 2, 3, 3]


def _backup(
    label: str, start: int, stop: int, stopped: dt.datetime, started: dt.datetime | None = None
) -> BackupSet:
    return BackupSet(
        label,
        "full",
        started or stopped,
        stopped,
        "0/0",
        "0/0",
        wal.Segment(1, start).name(MIB16),
        wal.Segment(1, stop).name(MIB16),
        0,
        0,
        None,
    )


def test_reachable_stretches_skip_the_gap_and_a_backup_whose_own_wal_is_missing():
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    backups = [
        _backup("one", 2, 3, t0),
        _backup("two", 10, 11, t0 + 5 * hour),  # its own WAL is in the second gap
        _backup("three", 20, 21, t0 + 8 * hour),
    ]
    gaps = (
        wal.Gap("a", "a", 1, 6, 6, reachable_until=t0 + 2 * hour, resumes_at=t0 + 8 * hour),
        wal.Gap("b", "b", 1, 11, 11, reachable_until=t0 + 5 * hour, resumes_at=t0 + 8 * hour),
    )
    stretches = wal.reachable_stretches(backups, gaps, t0 + 10 * hour, MIB16)
    assert stretches == [
        wal.Stretch(t0, t0 + 2 * hour),
        wal.Stretch(t0 + 8 * hour, t0 + 10 * hour),
    ]
    window = RecoveryWindow(tuple(stretches), gaps)
    assert window.contains(t0 + hour) and not window.contains(t0 + 3 * hour)
    assert window.gap_before(t0 + 3 * hour) is gaps[0]
    with pytest.raises(PitrError, match="lies in a gap of the WAL archive"):
        require_in_window(SERVER, window, backups, t0 + 3 * hour)
    with pytest.raises(PitrError, match="lies after the newest archived WAL"):
        require_in_window(SERVER, window, backups, t0 + 11 * hour)


def test_a_moment_while_the_only_reaching_backup_was_taken_is_refused_with_that_reason():
    backups = [
        _backup("one", 2, 3, T0 + HOUR, started=T0),
        _backup("two", 5, 6, T0 + 4 * HOUR, started=T0 + 3 * HOUR),
    ]
    window = RecoveryWindow((wal.Stretch(T0 + HOUR, T0 + 6 * HOUR),))

    with pytest.raises(PitrError, match="while base backup one was being taken") as refused:
        require_in_window(SERVER, window, backups, T0 + HOUR / 2)
    assert "reachable: 2026-12-01 01:00:00+00:00 to 2026-12-01 06:00:00+00:00" in str(refused.value)
    with pytest.raises(PitrError, match="before the oldest kept base backup is consistent"):
        require_in_window(SERVER, window, backups, T0 - HOUR)
    # While "two" was being taken, "one" and its WAL reach the moment.
    require_in_window(SERVER, window, backups, T0 + 3.5 * HOUR)
    assert backup_for(backups, T0 + 3.5 * HOUR) == backups[0]


def test_spans_say_which_backup_a_restore_starts_from_and_why_the_rest_is_unreachable():
    backups = [
        _backup("one", 2, 3, T0 + HOUR, started=T0),
        _backup("two", 20, 21, T0 + 8 * HOUR, started=T0 + 7 * HOUR),
    ]
    gap = wal.Gap("a", "a", 1, 6, 6, reachable_until=T0 + 3 * HOUR, resumes_at=T0 + 8 * HOUR)
    window = RecoveryWindow(
        (wal.Stretch(T0 + HOUR, T0 + 3 * HOUR), wal.Stretch(T0 + 8 * HOUR, T0 + 9 * HOUR)), (gap,)
    )

    spans = recovery_spans(window, backups)

    described = [
        (span.start - T0, span.end - T0, span.backup.label if span.backup else span.reason[:20])
        for span in spans
    ]
    assert described == [
        (0 * HOUR, 1 * HOUR, "it lies while base b"),
        (1 * HOUR, 3 * HOUR, "one"),
        (3 * HOUR, 8 * HOUR, "it lies in a gap of "),
        (8 * HOUR, 9 * HOUR, "two"),
    ]
