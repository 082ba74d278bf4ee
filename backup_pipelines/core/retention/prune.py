"""Pruning: what exists in storage, which of it the retention policy expires, deleting it whole.

A plan is computed from what storage actually holds (paginated listings) and from which
archives passed verification. Deleting a backup first writes its tombstone
(refs: layout.ref_key(<db>, "pruning", <day>)), then removes its manifests, then the rest, the
tombstone last: from the tombstone on the day no longer counts as a backup, and a plan that
finds a tombstone finishes that deletion, whatever a crash left (so a dump whose archive copy
was already deleted is never mistaken for "the only copy"). Objects a crash leaves behind
without a manifest are found and removed by a later plan.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backup_pipelines import names
from backup_pipelines.core.buckets.snapshots import read_snapshot, snapshot_days
from backup_pipelines.core.common.config import RetentionRules
from backup_pipelines.core.common.layout import (
    PRUNING_STEP,
    config_day_prefix,
    config_manifest_key,
    database_prefix,
    day_of_backup_key,
    day_of_ref_key,
    exports_prefix,
    is_day_manifest,
    ref_key,
    refs_prefix,
    snapshot_listing_key,
    snapshot_manifest_key,
    snapshot_objects_prefix,
    step_of_ref_key,
)
from backup_pipelines.core.common.stores import BackupStores
from backup_pipelines.core.common.subjects import Bucket, ConfigSource, Database, Replica, Subject
from backup_pipelines.core.configs.snapshots import config_days, read_config_manifest
from backup_pipelines.core.retention.policy import (
    BackupStatus,
    Decision,
    RetentionPolicy,
    decide,
)
from backup_pipelines.storage import ObjectStore, StoredObject

if TYPE_CHECKING:
    from backup_pipelines.storage import S3Store

SCOPE_BACKUP = "backup"  # the archive, the dump, their manifests and references
SCOPE_DUMP = "dump"  # only the hot copy; the archive copy stays
SCOPE_INCOMPLETE = "incomplete"  # objects without a manifest, left by a crash
SCOPE_SNAPSHOT = "snapshot"  # a bucket snapshot: its manifest, listing and unshared objects
SCOPE_REPLICA = "replica"  # a day's copy in the replica store: its manifest, then its objects
SCOPE_EXPORT = "export"  # a data export past exports.expire_days: its ZIP
SCOPE_CONFIG = "config"  # a configuration snapshot: its manifest, then archives no kept day names
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Objects without a manifest are only removed once no dump or copy can still be writing them.
_INCOMPLETE_AFTER = dt.timedelta(days=2)


@dataclass
class DayObjects:
    archive: list[StoredObject] = field(default_factory=list)
    dumps: list[StoredObject] = field(default_factory=list)
    refs: list[StoredObject] = field(default_factory=list)

    @property
    def archived(self) -> bool:
        return any(is_day_manifest(o.key) for o in self.archive)

    @property
    def dumped(self) -> bool:
        return any(is_day_manifest(o.key) for o in self.dumps)

    @property
    def pruning(self) -> bool:
        """A prune of this day began (and was interrupted): it is no backup any more."""
        return any(step_of_ref_key(o.key) == PRUNING_STEP for o in self.refs)

    def stored(self, *stores: str) -> list[tuple[str, StoredObject]]:
        """(store, object) pairs of the given stores, each store's manifest first."""
        return [
            (name, stored) for name in stores for stored in _manifest_first(getattr(self, name))
        ]


def _manifest_first(objects: list[StoredObject]) -> list[StoredObject]:
    """A day's objects in deletion order: without its manifest first, it is no backup."""
    return sorted(objects, key=lambda o: not is_day_manifest(o.key))


def tombstone_key(database: str, day: str) -> str:
    return ref_key(database, PRUNING_STEP, day)


def inventory(stores: BackupStores, database: str) -> dict[str, DayObjects]:
    """Every stored object of `database`, by day."""
    days: dict[str, DayObjects] = {}
    listings = (
        ("archive", stores.archive, database_prefix(database), day_of_backup_key),
        ("dumps", stores.dumps, database_prefix(database), day_of_backup_key),
        ("refs", stores.refs, refs_prefix(database), day_of_ref_key),
    )
    for name, store, prefix, day_of in listings:
        for stored in store.list_objects(prefix):
            day = day_of(stored.key)
            if _DAY.match(day):
                getattr(days.setdefault(day, DayObjects()), name).append(stored)
    return days


@dataclass(frozen=True)
class Deletion:
    subject: Subject
    day: str
    scope: str
    reason: str
    objects: tuple[tuple[str, str], ...]  # (store, key), manifests first


@dataclass(frozen=True)
class RetentionPlan:
    subject: Subject
    kept: dict[str, tuple[str, ...]]  # day -> why
    deletions: list[Deletion]


def plan_database(
    stores: BackupStores,
    database: str,
    rules: RetentionRules,
    verified: Mapping[str, bool],
    today: dt.date,
) -> RetentionPlan:
    """What `rules` keep of `database`'s stored backups, and what to delete."""
    days = inventory(stores, database)
    statuses = [
        BackupStatus(dt.date.fromisoformat(day), verified.get(day))
        for day, objects in days.items()
        if objects.archived and not objects.pruning
    ]
    decisions = decide(statuses, policy_for(rules))
    if sum(bool(status.verified) for status in statuses) < rules.min_keep:
        # Too few good backups: every copy of anything may be needed, dumps included.
        return RetentionPlan(
            Database(database), {d.day.isoformat(): d.reasons for d in decisions}, []
        )
    kept: dict[str, tuple[str, ...]] = {}
    deletions: list[Deletion] = []
    for decision in decisions:
        day = decision.day.isoformat()
        lock = _locked_until(stores.archive, days[day].archive) if not decision.keep else None
        if decision.keep or lock:
            kept[day] = _kept_because(decision.reasons, lock)
            continue
        deletions.append(_backup_deletion(database, day, days[day], decision.reasons[0]))
    for day, objects in sorted(days.items()):
        age = today - dt.date.fromisoformat(day)
        if objects.pruning:
            reason = "finishing a deletion that was interrupted (its tombstone is there)"
            deletions.append(_backup_deletion(database, day, objects, reason))
        elif day in kept and objects.dumps and age.days >= rules.dump_days and verified.get(day):
            reason = f"dump older than dump_days {rules.dump_days}; its verified archive is kept"
            dump_refs = [
                (n, o) for n, o in objects.stored("refs") if step_of_ref_key(o.key) == names.DUMP
            ]
            pairs = objects.stored("dumps") + dump_refs
            deletions.append(_deletion(database, day, SCOPE_DUMP, reason, pairs))
        elif not objects.archived and not objects.dumped and age > _INCOMPLETE_AFTER:
            reason = "objects without a manifest (an interrupted dump, copy or prune)"
            pairs = objects.stored("archive", "dumps", "refs")
            deletions.append(_deletion(database, day, SCOPE_INCOMPLETE, reason, pairs))
        elif not objects.archived and objects.dumped:
            kept[day] = ("dump without an archive copy: the only copy",)
    return RetentionPlan(Database(database), kept, deletions)


def policy_for(rules: RetentionRules) -> RetentionPolicy:
    return RetentionPolicy(rules.daily, rules.weekly, rules.monthly, rules.yearly, rules.min_keep)


def _deletion(
    database: str, day: str, scope: str, reason: str, pairs: list[tuple[str, StoredObject]]
) -> Deletion:
    return _subject_deletion(Database(database), day, scope, reason, pairs)


def _subject_deletion(
    subject: Subject, day: str, scope: str, reason: str, pairs: list[tuple[str, StoredObject]]
) -> Deletion:
    return Deletion(subject, day, scope, reason, tuple((name, o.key) for name, o in pairs))


def _backup_deletion(database: str, day: str, objects: DayObjects, reason: str) -> Deletion:
    """Every object of the day, manifests first and the tombstone last."""
    tombstone = tombstone_key(database, day)
    stored = objects.stored("archive", "dumps", "refs")
    keys = [(name, o.key) for name, o in stored if o.key != tombstone]
    return Deletion(Database(database), day, SCOPE_BACKUP, reason, (*keys, ("refs", tombstone)))


def _locked_until(store: ObjectStore, objects: list[StoredObject]) -> dt.datetime | None:
    """Until when an object lock holds any of `objects` (None: none is locked)."""
    locks = [store.locked_until(o.key) for o in objects]
    return max((lock for lock in locks if lock), default=None)


def _kept_because(reasons: tuple[str, ...], lock: dt.datetime | None) -> tuple[str, ...]:
    return reasons + ((f"object lock until {lock:%Y-%m-%d}",) if lock else ())


def object_uris(stores: BackupStores, deletion: Deletion) -> list[str]:
    return [getattr(stores, name).uri(key) for name, key in deletion.objects]


def delete_objects(stores: BackupStores, deletion: Deletion) -> None:
    """Delete in the planned order, manifests first, so a half-done deletion is no backup; a
    whole backup's deletion is announced by its tombstone first (deleted last)."""
    if deletion.scope == SCOPE_BACKUP:
        record = {"reason": deletion.reason, "objects": [key for _, key in deletion.objects]}
        stores.refs.write_bytes(
            tombstone_key(deletion.subject.name, deletion.day), json.dumps(record).encode()
        )
    for name, key in deletion.objects:
        getattr(stores, name).delete(key)


def plan_replica(
    replica: ObjectStore,
    database: str,
    rules: RetentionRules,
    verified: Mapping[str, bool],
    today: dt.date,
) -> RetentionPlan:
    """What `rules` keep of `database`'s copies in the replica store: the same policy, applied
    to the days proved there (`verified`: the replica's own check), never below `min_keep`
    proved copies. A deletion removes the manifest first, so a half-done one is no copy."""
    days: dict[str, list[StoredObject]] = {}
    for stored in replica.list_objects(database_prefix(database)):
        day = day_of_backup_key(stored.key)
        if _DAY.match(day):
            days.setdefault(day, []).append(stored)
    committed = {
        day for day, objects in days.items() if any(is_day_manifest(o.key) for o in objects)
    }
    statuses = [BackupStatus(dt.date.fromisoformat(day), verified.get(day)) for day in committed]
    kept: dict[str, tuple[str, ...]] = {}
    deletions: list[Deletion] = []
    for decision in decide(statuses, policy_for(rules)):
        day = decision.day.isoformat()
        lock = _locked_until(replica, days[day]) if not decision.keep else None
        if decision.keep or lock:
            kept[day] = _kept_because(decision.reasons, lock)
            continue
        pairs = [("replica", o) for o in _manifest_first(days[day])]
        deletions.append(
            _subject_deletion(Replica(database), day, SCOPE_REPLICA, decision.reasons[0], pairs)
        )
    for day in sorted(set(days) - committed):
        if today - dt.date.fromisoformat(day) > _INCOMPLETE_AFTER:
            reason = "objects without a manifest (an interrupted copy or prune)"
            pairs = [("replica", o) for o in days[day]]
            deletions.append(
                _subject_deletion(Replica(database), day, SCOPE_INCOMPLETE, reason, pairs)
            )
    return RetentionPlan(Replica(database), kept, deletions)


def _decide_days(
    days: list[str], verified: Mapping[str, bool], rules: RetentionRules
) -> tuple[list[Decision], dict[str, tuple[str, ...]]]:
    """The policy's decision on each day, and the kept days with why (everything is kept
    below min_keep verified days)."""
    statuses = [BackupStatus(dt.date.fromisoformat(day), verified.get(day)) for day in days]
    decisions = decide(statuses, policy_for(rules))
    return decisions, {d.day.isoformat(): d.reasons for d in decisions if d.keep}


def plan_snapshots(
    store: S3Store,
    name: str,
    rules: RetentionRules,
    verified: Mapping[str, bool],
    today: dt.date,
) -> RetentionPlan:
    """What `rules` keep of bucket `name`'s snapshots. An object still referenced by a kept
    snapshot is never deleted, wherever it lives."""
    decisions, kept = _decide_days(snapshot_days(store, name), verified, rules)
    needed = {
        entry.location
        for day in kept
        if (manifest := read_snapshot(store, name, day)) is not None
        for entry in manifest.entries
    }
    deletions = []
    for decision in decisions:
        day = decision.day.isoformat()
        if decision.keep:
            continue
        manifest = read_snapshot(store, name, day)
        own = set(store.list_keys(snapshot_objects_prefix(name, day)))
        referenced = {e.location for e in manifest.entries} if manifest else set()
        objects = [
            ("snapshots", snapshot_manifest_key(name, day)),
            ("snapshots", snapshot_listing_key(name, day)),
            *(("snapshots", key) for key in sorted((own | referenced) - needed)),
        ]
        deletions.append(
            Deletion(Bucket(name), day, SCOPE_SNAPSHOT, decision.reasons[0], tuple(objects))
        )
    return RetentionPlan(Bucket(name), kept, deletions)


def plan_configs(
    store: ObjectStore,
    name: str,
    rules: RetentionRules,
    verified: Mapping[str, bool],
    today: dt.date,
) -> RetentionPlan:
    """What `rules` keep of configuration source `name`'s versions. An archive a kept day's
    manifest names (a later unchanged day names an earlier day's) is never deleted."""
    days = config_days(store, name)
    decisions, kept = _decide_days(days, verified, rules)
    needed = {
        manifest.object_key
        for day in kept
        if (manifest := read_config_manifest(store, name, day)) is not None
    }
    deletions = []
    for day in sorted(set(days) - set(kept)):
        manifest = read_config_manifest(store, name, day)
        own = set(store.list_keys(config_day_prefix(name, day))) - {config_manifest_key(name, day)}
        named = {manifest.object_key} if manifest else set()
        objects = [
            ("archive", config_manifest_key(name, day)),
            *(("archive", key) for key in sorted((own | named) - needed)),
        ]
        reason = next(d.reasons[0] for d in decisions if d.day.isoformat() == day)
        deletions.append(Deletion(ConfigSource(name), day, SCOPE_CONFIG, reason, tuple(objects)))
    return RetentionPlan(ConfigSource(name), kept, deletions)


def plan_exports(
    store: ObjectStore,
    database: str,
    made_at: Mapping[str, dt.datetime],
    expire_days: int,
    now: dt.datetime,
) -> RetentionPlan:
    """The data exports of `database` older than `expire_days` (by when each was recorded,
    `made_at`, by export id); an export with no record is kept (its age is not known)."""
    deletions = []
    for stored in store.list_objects(exports_prefix(database)):
        export_id = stored.key.rsplit("/", 1)[-1].removesuffix(".zip")
        made = made_at.get(export_id)
        if made is not None and now - made > dt.timedelta(days=expire_days):
            reason = f"export older than exports.expire_days ({expire_days})"
            deletions.append(
                Deletion(
                    Database(database), export_id, SCOPE_EXPORT, reason, (("dumps", stored.key),)
                )
            )
    return RetentionPlan(Database(database), {}, deletions)
