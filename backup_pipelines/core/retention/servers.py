"""Expiring a server's base backups by the retention policy: the plan (which full backups are
kept, why, and what pgBackRest says expiring the rest removes), then exactly that plan."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from backup_pipelines.core.retention.policy import BackupStatus, RetentionPolicy, decide
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import BackupSet, Engine


@dataclass(frozen=True)
class ExpiryPlan:
    """Which full backups the policy keeps (with the backups built on them) and which go;
    `engine_says` is pgBackRest's own dry-run account of what expiring them removes."""

    keep: dict[str, tuple[str, ...]]  # full backup label -> why it is kept
    expire: dict[str, str]  # full backup label -> why it goes
    engine_says: list[str]


def plan_expiry(engine: Engine, policy: RetentionPolicy) -> ExpiryPlan:
    """Apply the GFS policy to the full backups (one per day counts: the newest of the day),
    then ask pgBackRest what expiring the others would remove. Deletes nothing."""
    fulls = [backup for backup in engine.info().backups if backup.kind == "full"]
    newest_of_day: dict[dt.date, BackupSet] = {}
    for backup in fulls:  # oldest first: a later one of the same day replaces it
        newest_of_day[backup.stopped.date()] = backup
    decisions = decide([BackupStatus(day, True) for day in newest_of_day], policy)
    keep = {newest_of_day[d.day].label: d.reasons for d in decisions if d.keep}
    expire = {newest_of_day[d.day].label: d.reasons[0] for d in decisions if not d.keep}
    for backup in fulls:
        if backup.label not in keep and backup.label not in expire:
            newest = newest_of_day[backup.stopped.date()].label
            expire[backup.label] = f"a newer full backup of the same day ({newest}) stands for it"
    engine_says = engine.expire(sorted(expire), dry_run=True) if expire else []
    oldest_kept = next((backup for backup in fulls if backup.label in keep), None)
    if oldest_kept is not None:
        engine_says.append(
            f"then WAL before {oldest_kept.wal_start} (start of {oldest_kept.label}, the oldest "
            "kept full backup) is removed"
        )
    return ExpiryPlan(keep, expire, engine_says)


def apply_expiry(engine: Engine, plan: ExpiryPlan) -> list[str]:
    """Expire exactly the plan's full backups (pgBackRest removes those built on them), then
    the WAL older than the oldest kept backup. Only pgBackRest deletes from its repository."""
    removed = engine.expire(sorted(plan.expire), dry_run=False) if plan.expire else []
    fulls = {backup.label for backup in engine.info().backups if backup.kind == "full"}
    if fulls != set(plan.keep):
        raise PitrError(
            f"server {engine.server!r}: after expiring the plan the repository holds full "
            f"backups {sorted(fulls)}, not the kept {sorted(plan.keep)}; it changed meanwhile, "
            "so no WAL was expired: run the prune again"
        )
    return removed + engine.expire_archive(len(fulls))
