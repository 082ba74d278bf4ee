"""The objectives' model on figures alone: a restore time scaled by growth, and the audit's
per-day account of how long an objective was not met (across midnight)."""

import datetime as dt

from backup_pipelines.core.recovery.objectives import database_rto, history_by_day


def at(day: int, hour: int) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, tzinfo=dt.UTC)


def test_a_restore_time_grows_with_the_archive_and_never_shrinks_below_the_measured_one():
    grown = database_rto(40.0, "2026-12-01", 100 * 2**20, 250 * 2**20)
    assert grown.seconds == 100.0 and "x2.50" in grown.basis
    shrunk = database_rto(40.0, "2026-12-01", 100 * 2**20, 50 * 2**20)
    assert shrunk.seconds == 40.0


def test_each_verdict_holds_until_the_next_evaluation_split_at_midnight():
    evaluations = [
        (at(6, 22), "rpo", {"server/main": True}),
        (at(6, 23), "rpo", {"server/main": False}),  # missed from 23:00 ...
        (at(7, 1), "rpo", {"server/main": True}),  # ... to 01:00: an hour on each day
        (at(7, 2), "rto", {"server/main": True}),
    ]
    days = {(d.day, d.objective): d for d in history_by_day(evaluations, until=at(7, 12))}
    assert days[("2026-12-06", "rpo")].seconds_not_met == 3600
    assert days[("2026-12-06", "rpo")].evaluations == 2
    assert days[("2026-12-07", "rpo")].seconds_not_met == 3600
    assert days[("2026-12-07", "rto")].met_all_day
    assert ("2026-12-05", "rpo") not in days  # nothing was evaluated before the first
