"""The retention policy: which backups to keep, with restic `forget` semantics (all in UTC).

Each rule keeps the newest backup in each of its last N periods that have a backup: `daily`
(days), `weekly` (ISO weeks, Monday-Sunday), `monthly`, `yearly`; rules combine by union.
Only verified backups count. Safety rules on top:
- the newest verified backup is always kept, and so are the newest `min_keep` verified ones;
- with fewer than `min_keep` verified backups nothing at all is deleted;
- a backup not (yet) verified is kept while it is newer than the newest verified one, so a
  run of failed or pending backups never pushes good ones out, and is never itself lost
  before a good one follows it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

RULES: dict[str, Callable[[dt.date], Hashable]] = {
    "daily": lambda day: day,
    "weekly": lambda day: day.isocalendar()[:2],
    "monthly": lambda day: (day.year, day.month),
    "yearly": lambda day: day.year,
}


@dataclass(frozen=True)
class RetentionPolicy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    yearly: int = 0
    min_keep: int = 3

    def counts(self) -> dict[str, int]:
        return {rule: getattr(self, rule) for rule in RULES}


@dataclass(frozen=True)
class BackupStatus:
    day: dt.date
    verified: bool | None  # True: verification passed; False: failed; None: not verified yet


@dataclass(frozen=True)
class Decision:
    day: dt.date
    keep: bool
    reasons: tuple[str, ...]


def period_label(rule: str, day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return {
        "daily": day.isoformat(),
        "weekly": f"{year}-W{week:02d}",
        "monthly": f"{day:%Y-%m}",
        "yearly": str(day.year),
    }[rule]


def decide(backups: Iterable[BackupStatus], policy: RetentionPolicy) -> list[Decision]:
    """Keep or delete each backup (one per day), newest first, with the reasons why."""
    ordered = sorted(backups, key=lambda backup: backup.day, reverse=True)
    verified = [backup.day for backup in ordered if backup.verified]
    reasons: dict[dt.date, list[str]] = {backup.day: [] for backup in ordered}
    if len(verified) < policy.min_keep:
        note = f"only {len(verified)} verified backups, fewer than min_keep {policy.min_keep}"
        return [Decision(backup.day, True, (note,)) for backup in ordered]
    oldest_kept: dict[str, str] = {}  # rule -> its oldest kept period
    for rule, count in policy.counts().items():
        periods: list[Hashable] = []
        for day in verified:
            period = RULES[rule](day)
            if period in periods:
                continue  # an older backup of a period that is already kept
            if len(periods) == count:
                break
            periods.append(period)
            oldest_kept[rule] = period_label(rule, day)
            reasons[day].append(f"{rule} {len(periods)}/{count} ({oldest_kept[rule]})")
    for rank, day in enumerate(verified[: policy.min_keep], start=1):
        reasons[day].append(
            "newest verified backup" if rank == 1 else f"min_keep {policy.min_keep}"
        )
    newest_verified = verified[0] if verified else None
    decisions = []
    for backup in ordered:
        if not backup.verified and (newest_verified is None or backup.day > newest_verified):
            reasons[backup.day].append("not verified yet, newer than the newest verified backup")
        kept = bool(reasons[backup.day])
        why = tuple(reasons[backup.day]) if kept else (_expiry_reason(backup, policy, oldest_kept),)
        decisions.append(Decision(backup.day, kept, why))
    return decisions


def _expiry_reason(
    backup: BackupStatus, policy: RetentionPolicy, oldest_kept: dict[str, str]
) -> str:
    if backup.verified is None:
        return "never verified, and older than the newest verified backup"
    if backup.verified is False:
        return "its verification failed, and it is older than the newest verified backup"
    covered = "; ".join(
        f"{rule} {policy.counts()[rule]}: {oldest} and newer"
        for rule, oldest in oldest_kept.items()
    )
    return f"no rule keeps it: it is not the newest backup of a kept period ({covered})"
