"""Incremental snapshots of S3 buckets: take, verify, restore, and what pruning may delete.

Per configured bucket name and day (core/common/layout.py): the source listing taken at snapshot
time, the objects new or changed since the previous snapshot, and the manifest, written last:
every key with size, ETag and where its bytes live (this day's objects or an older day's).
An object unchanged since the previous snapshot (same size and ETag) is referenced, not copied.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.layout import (
    day_of_backup_key,
    is_day_manifest,
    snapshot_listing_key,
    snapshot_manifest_key,
    snapshot_object_key,
    snapshot_prefix,
)
from backup_pipelines.storage import StoredObject

if TYPE_CHECKING:
    from backup_pipelines.storage import S3Store

COPY_THREADS = 16
_LISTED_MISMATCHES = 20


class SnapshotError(RuntimeError):
    """A snapshot could not be taken or restored; the message says which and why."""


@dataclass(frozen=True)
class SnapshotEntry:
    key: str  # relative to the source prefix
    size: int
    etag: str  # the source object's ETag when it was listed
    location: str  # where its bytes live in the snapshot store
    stored_etag: str  # the ETag of that stored copy


@dataclass(frozen=True)
class SnapshotManifest:
    name: str
    day: str
    source: str
    taken_at: str
    copied: int
    referenced: int
    bytes_copied: int
    entries: list[SnapshotEntry]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotManifest:
        raw = json.loads(data)
        return cls(**{**raw, "entries": [SnapshotEntry(**e) for e in raw["entries"]]})


def snapshot_days(store: S3Store, name: str) -> list[str]:
    """Days with a committed snapshot (a manifest), oldest first."""
    return sorted(
        day_of_backup_key(key)
        for key in store.list_keys(snapshot_prefix(name))
        if is_day_manifest(key)
    )


def read_snapshot(store: S3Store, name: str, day: str) -> SnapshotManifest | None:
    key = snapshot_manifest_key(name, day)
    return SnapshotManifest.from_json(store.read_bytes(key)) if store.exists(key) else None


def _listing(source: S3Store) -> list[StoredObject]:
    return [o for o in source.list_objects("") if not o.key.endswith("/")]


def take_snapshot(
    source: S3Store, store: S3Store, name: str, day: str, now: dt.datetime
) -> SnapshotManifest:
    """Copy what changed since the newest earlier snapshot; reference the rest."""
    listing = _listing(source)
    store.write_bytes(
        snapshot_listing_key(name, day), json.dumps([asdict(o) for o in listing]).encode()
    )
    earlier = [d for d in snapshot_days(store, name) if d < day]
    previous = read_snapshot(store, name, earlier[-1]) if earlier else None
    known = {e.key: e for e in previous.entries} if previous else {}
    unchanged, changed = [], []
    for listed in listing:
        before = known.get(listed.key)
        if before is not None and (before.size, before.etag) == (listed.size, listed.etag):
            unchanged.append(before)
        else:
            changed.append(listed)

    def copy(listed: StoredObject) -> SnapshotEntry:
        location = snapshot_object_key(name, day, listed.key)
        store.copy_from(source, listed.key, location)
        stored = store.head(location)
        if stored is None:
            raise SnapshotError(f"bucket {name!r}: the copy {store.uri(location)} vanished")
        return SnapshotEntry(
            listed.key, listed.size, listed.etag or "", location, stored.etag or ""
        )

    with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix=f"snapshot-{name}") as pool:
        copied = list(pool.map(copy, changed))
    manifest = SnapshotManifest(
        name=name,
        day=day,
        source=source.uri(""),
        taken_at=now.isoformat(),
        copied=len(copied),
        referenced=len(unchanged),
        bytes_copied=sum(e.size for e in copied),
        entries=sorted(unchanged + copied, key=lambda e: e.key),
    )
    store.write_bytes(snapshot_manifest_key(name, day), manifest.to_json())
    return manifest


def verify_snapshot(
    store: S3Store, name: str, day: str, fraction: float, rng: random.Random
) -> list[CheckOutcome]:
    """The manifest matches the listing taken at snapshot time; stored copies are intact."""
    manifest = read_snapshot(store, name, day)
    if manifest is None:
        raise SnapshotError(f"bucket {name!r} has no snapshot for {day}")
    listed = {
        o["key"]: (o["size"], o["etag"])
        for o in json.loads(store.read_bytes(snapshot_listing_key(name, day)))
    }
    recorded = {e.key: (e.size, e.etag) for e in manifest.entries}
    differing = sorted(
        k for k in listed.keys() | recorded.keys() if listed.get(k) != recorded.get(k)
    )
    listing_outcome = CheckOutcome(
        names.SNAPSHOT_MANIFEST,
        not differing,
        f"the manifest lists the {len(listed)} objects the source held at snapshot time"
        if not differing
        else f"{len(differing)} keys differ between manifest and source listing: "
        + ", ".join(differing[:_LISTED_MISMATCHES]),
        {
            "objects_listed": len(listed),
            "objects_in_manifest": len(recorded),
            "differing": differing[:50],
        },
    )
    sample = (
        manifest.entries
        if fraction >= 1
        else rng.sample(
            manifest.entries,
            max(1, round(len(manifest.entries) * fraction)) if manifest.entries else 0,
        )
    )
    problems = list(filter(None, _stored_problems(store, sample)))
    objects_outcome = CheckOutcome(
        names.SNAPSHOT_OBJECTS,
        not problems,
        f"{len(sample)} of {len(manifest.entries)} stored objects checked: "
        + (
            "all present with their size and checksum"
            if not problems
            else "; ".join(problems[:_LISTED_MISMATCHES])
        ),
        {
            "objects_checked": len(sample),
            "objects_in_snapshot": len(manifest.entries),
            "fraction": fraction,
            "problems": problems[:50],
            "copied": manifest.copied,
            "referenced": manifest.referenced,
        },
    )
    return [listing_outcome, objects_outcome]


def _stored_problems(store: S3Store, entries: Iterable[SnapshotEntry]) -> list[str | None]:
    def check(entry: SnapshotEntry) -> str | None:
        stored = store.head(entry.location)
        if stored is None:
            return f"{entry.key}: missing ({store.uri(entry.location)})"
        if stored.size != entry.size or stored.etag != entry.stored_etag:
            return f"{entry.key}: stored copy differs (size {stored.size}, ETag {stored.etag})"
        return None

    with ThreadPoolExecutor(COPY_THREADS) as pool:
        return list(pool.map(check, entries))


def restore_snapshot(
    store: S3Store, name: str, day: str, target: S3Store, *, allow_non_empty: bool = False
) -> int:
    """Copy a snapshot's objects to `target` (a bucket and prefix); returns how many."""
    manifest = read_snapshot(store, name, day)
    if manifest is None:
        days = snapshot_days(store, name)
        raise SnapshotError(
            f"bucket {name!r} has no snapshot for {day}; snapshot days: {', '.join(days[-10:])}"
        )
    if not allow_non_empty and next(iter(target.list_keys("")), None) is not None:
        raise SnapshotError(
            f"{target.uri('')} is not empty; choose an empty bucket or prefix, or set "
            "allow_non_empty: true to overwrite keys that exist"
        )
    with ThreadPoolExecutor(COPY_THREADS) as pool:
        list(pool.map(lambda e: target.copy_from(store, e.location, e.key), manifest.entries))
    return len(manifest.entries)
