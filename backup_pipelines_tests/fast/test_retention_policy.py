"""The retention policy over many generated histories, against an independent reference."""

import datetime as dt
import random

import pytest

from backup_pipelines.core.retention.policy import BackupStatus, RetentionPolicy, decide


def reference_keep(history: list[BackupStatus], policy: RetentionPolicy) -> set[dt.date]:
    """The policy written from its definition, by sets rather than by one pass."""
    verified = sorted((b.day for b in history if b.verified), reverse=True)
    if len(verified) < policy.min_keep:
        return {b.day for b in history}
    period_of = {
        "daily": lambda d: d.toordinal(),
        "weekly": lambda d: (d.isocalendar().year, d.isocalendar().week),
        "monthly": lambda d: (d.year, d.month),
        "yearly": lambda d: d.year,
    }
    keep: set[dt.date] = set(verified[: max(policy.min_keep, 1)])
    for rule, count in policy.counts().items():
        newest_in_period: dict[object, dt.date] = {}
        for day in verified:
            period = period_of[rule](day)
            newest_in_period[period] = max(day, newest_in_period.get(period, day))
        last_periods = sorted(newest_in_period, reverse=True)[:count]
        keep |= {newest_in_period[period] for period in last_periods}
    keep |= {b.day for b in history if not b.verified and b.day > verified[0]}
    return keep


def generated_history(rng: random.Random) -> list[BackupStatus]:
    # Start dates near year ends, including years with an ISO week 53 (2020, 2026).
    start = dt.date(rng.choice([2019, 2020, 2025, 2026]), 12, rng.randint(1, 28))
    start -= dt.timedelta(days=rng.randint(0, 800))
    history, day = [], start
    for _ in range(rng.randint(0, 500)):
        day += dt.timedelta(days=rng.choice([1, 1, 1, 1, 2, 3, 9, 40]))  # gaps of all sizes
        roll = rng.random()
        verified = True if roll < 0.8 else (False if roll < 0.93 else None)
        history.append(BackupStatus(day, verified))
    return history


def generated_policy(rng: random.Random) -> RetentionPolicy:
    counts = [rng.choice([0, 1, 2, 4, 7, 12, 30]) for _ in range(4)]
    if not any(counts):
        counts[0] = 1
    return RetentionPolicy(*counts, min_keep=rng.choice([1, 2, 3, 5, 10]))


@pytest.mark.parametrize("seed", range(400))
def test_policy_matches_the_reference_and_keeps_its_promises(seed):
    rng = random.Random(seed)
    history, policy = generated_history(rng), generated_policy(rng)
    decisions = decide(history, policy)
    kept = {d.day for d in decisions if d.keep}

    assert [d.day for d in decisions] == sorted((b.day for b in history), reverse=True)
    assert kept == reference_keep(history, policy)
    verified = sorted((b.day for b in history if b.verified), reverse=True)
    if verified:
        assert verified[0] in kept  # the newest verified backup is never deleted
        assert len(kept & set(verified)) >= min(policy.min_keep, len(verified))
    if len(verified) < policy.min_keep:
        assert kept == {b.day for b in history}  # nothing is deleted
    # Failed or missing verifications never push a verified backup out.
    only_verified = [b for b in history if b.verified]
    kept_without_failures = {d.day for d in decide(only_verified, policy) if d.keep}
    assert kept & set(verified) == kept_without_failures
    for decision in decisions:
        assert decision.reasons  # every decision says why


def test_worked_example_from_the_readme():
    # Daily backups from 2026-10-01 to 2026-11-23, except that 11-20 and 11-21 failed.
    days = [dt.date(2026, 10, 1) + dt.timedelta(days=n) for n in range(54)]
    failed = {dt.date(2026, 11, 20), dt.date(2026, 11, 21)}
    history = [BackupStatus(day, day not in failed) for day in days]
    decisions = {d.day: d for d in decide(history, RetentionPolicy(7, 4, 12, 0, 3))}
    kept = sorted(day.isoformat() for day, d in decisions.items() if d.keep)
    assert kept == [
        "2026-10-31",  # monthly 2/12 (October)
        "2026-11-08",  # weekly 4/4 (2026-W45)
        "2026-11-15",  # daily 7/7, weekly 3/4 (W46)
        "2026-11-16",
        "2026-11-17",
        "2026-11-18",
        "2026-11-19",  # daily 3/7 (11-20 and 11-21 failed: they count for nothing)
        "2026-11-22",  # daily 2/7, weekly 2/4 (W47)
        "2026-11-23",  # daily 1/7, weekly 1/4 (W48), monthly 1/12, newest verified
    ]
    assert decisions[dt.date(2026, 11, 23)].reasons == (
        "daily 1/7 (2026-11-23)",
        "weekly 1/4 (2026-W48)",
        "monthly 1/12 (2026-11)",
        "newest verified backup",
    )
    assert decisions[dt.date(2026, 11, 21)].reasons == (
        "its verification failed, and it is older than the newest verified backup",
    )
    assert decisions[dt.date(2026, 11, 12)].reasons == (
        "no rule keeps it: it is not the newest backup of a kept period (daily 7: 2026-11-15 "
        "and newer; weekly 4: 2026-W45 and newer; monthly 12: 2026-10 and newer)",
    )


def test_unverified_backups_newer_than_the_last_good_one_are_kept():
    days = [dt.date(2026, 3, 1) + dt.timedelta(days=n) for n in range(10)]
    history = [BackupStatus(day, n < 5) for n, day in enumerate(days)]  # the last 5 failed
    decisions = {d.day: d for d in decide(history, RetentionPolicy(1, 0, 0, 0, 1))}
    assert all(decisions[day].keep for day in days[4:])
    assert not any(decisions[day].keep for day in days[:4])


def test_iso_week_53_spans_the_new_year():
    # 2026-W53 runs Monday 2026-12-28 to Sunday 2027-01-03: one week, two calendar years.
    days = [dt.date(2026, 12, 27), dt.date(2026, 12, 28), dt.date(2027, 1, 3)]
    decisions = decide([BackupStatus(d, True) for d in days], RetentionPolicy(0, 2, 0, 0, 1))
    kept = {d.day: d.reasons for d in decisions if d.keep}
    assert kept == {
        dt.date(2027, 1, 3): ("weekly 1/2 (2026-W53)", "newest verified backup"),
        dt.date(2026, 12, 27): ("weekly 2/2 (2026-W52)",),
    }
