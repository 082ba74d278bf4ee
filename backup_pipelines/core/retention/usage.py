"""Storage accounting: bytes and objects per database, against a configured capacity."""

from __future__ import annotations

from dataclasses import dataclass

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.layout import snapshot_prefix
from backup_pipelines.core.common.stores import BackupStores
from backup_pipelines.core.retention.prune import inventory

CAPACITY_WARN_FRACTION = 0.8


@dataclass(frozen=True)
class Usage:
    bytes: int
    objects: int


def storage_usage(
    stores: BackupStores, databases: list[str], buckets: list[str]
) -> dict[str, Usage]:
    """What each database's dumps, archives and references, and each bucket's snapshots
    (as `s3_<name>`), take up."""
    usage = {}
    for name in buckets:
        assert stores.snapshots is not None
        stored = list(stores.snapshots.list_objects(snapshot_prefix(name)))
        usage[names.bucket_group(name)] = Usage(sum(o.size for o in stored), len(stored))
    for database in databases:
        stored = [
            o
            for day in inventory(stores, database).values()
            for o in day.archive + day.dumps + day.refs
        ]
        usage[database] = Usage(sum(o.size for o in stored), len(stored))
    return usage


def check_capacity(total_bytes: int, capacity_gb: float) -> CheckOutcome:
    capacity = capacity_gb * 1e9
    used = total_bytes / capacity
    return CheckOutcome(
        names.STORAGE_CAPACITY,
        used <= CAPACITY_WARN_FRACTION,
        f"backups use {total_bytes / 1e9:.2f} GB, {used:.1%} of the configured "
        f"{capacity_gb:g} GB (fails above {CAPACITY_WARN_FRACTION:.0%})",
        {
            "used_bytes": total_bytes,
            "capacity_bytes": int(capacity),
            "used_fraction": round(used, 4),
        },
    )
