"""The retention plan as Dagster sees it: planning for every database and bucket, and the prune
job that deletes exactly what a plan listed (and the policy still expires). Thin wiring over
core/retention/prune.py. A plan's subject is a database, its copies in the replica store, or a
bucket (core/common/subjects.py)."""

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    DagsterInstance,
    Failure,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.common.stores import BackupStores
from backup_pipelines.core.common.subjects import (
    SUBJECT_KINDS,
    Bucket,
    ConfigSource,
    Database,
    Replica,
    Subject,
)
from backup_pipelines.core.retention.prune import (
    SCOPE_BACKUP,
    SCOPE_CONFIG,
    SCOPE_DUMP,
    SCOPE_EXPORT,
    SCOPE_REPLICA,
    SCOPE_SNAPSHOT,
    RetentionPlan,
    delete_objects,
    object_uris,
    plan_configs,
    plan_database,
    plan_exports,
    plan_replica,
    plan_snapshots,
)
from backup_pipelines.defs.records import materialized_at, verification_outcomes
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.storage import StorageError

# A run's plan stays reviewable in the UI; the next sensor tick plans the rest.
MAX_DELETIONS_PER_RUN = 500
# What a deletion removes from the UI's partition bars, by scope.
_WIPED_STEPS = {
    SCOPE_BACKUP: names.DATABASE_STEPS,
    SCOPE_DUMP: (names.DUMP,),
    SCOPE_SNAPSHOT: names.BUCKET_STEPS,
    SCOPE_REPLICA: names.REPLICA_STEPS,
    SCOPE_CONFIG: (names.CONFIG_PREFIX,),  # a source has one asset, whatever the step
}


def subjects(settings: BackupSettings) -> list[Subject]:
    config = settings.config()
    replicas = map(Replica, config.databases) if config.replica else ()
    return [
        *map(Database, config.databases),
        *replicas,
        *map(Bucket, config.buckets),
        *map(ConfigSource, config.config_sources()),
    ]


def subject_key(subject: Subject, step: str) -> AssetKey:
    if isinstance(subject, ConfigSource):
        return names.config_key(subject.name)
    if isinstance(subject, Bucket):
        return names.bucket_key(subject.name, step)
    return names.database_key(subject.name, step)


def retention_stores(settings: BackupSettings) -> BackupStores:
    """The stores a retention run reads and deletes in: the replica's too, when configured and
    usable (an unusable replica fails its own asset and alerts; it never stops the primary's
    retention)."""
    replica, _ = settings.usable_replica_store()
    return dataclasses.replace(settings.stores(), replica=replica)


def plan_all(
    settings: BackupSettings, instance: DagsterInstance, only: list[Subject] | None = None
) -> list[RetentionPlan]:
    """Plans for every database, replica, bucket and configuration source (or those in
    `only`)."""
    config, stores = settings.config(), retention_stores(settings)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    plans = []
    for subject in subjects(settings) if only is None else only:
        verification = subject_key(subject, names.VERIFICATION)
        if isinstance(subject, Replica):
            if stores.replica is None:
                continue
            copies = subject_key(subject, names.REPLICA)
            outcomes = verification_outcomes(instance, copies, names.PROVING_CHECKS[names.REPLICA])
            rules = config.replica_retention_for(subject.name)
            try:
                plans.append(plan_replica(stores.replica, subject.name, rules, outcomes, today))
            except StorageError:
                continue
        elif isinstance(subject, ConfigSource):
            key = names.config_key(subject.name)
            outcomes = verification_outcomes(instance, key, names.CONFIG_CHECKS)
            rules = config.config_retention_for(subject.name)
            plans.append(plan_configs(stores.archive, subject.name, rules, outcomes, today))
        elif isinstance(subject, Bucket):
            assert stores.snapshots is not None
            outcomes = verification_outcomes(instance, verification, names.SNAPSHOT_CHECKS)
            rules = config.bucket_retention_for(subject.name)
            plans.append(plan_snapshots(stores.snapshots, subject.name, rules, outcomes, today))
        else:
            outcomes = verification_outcomes(instance, verification, names.VERIFYING_CHECKS)
            rules = config.retention_for(subject.name)
            backups = plan_database(stores, subject.name, rules, outcomes, today)
            made = materialized_at(instance, names.database_key(subject.name, names.EXPORTS))
            expire_days = config.exports.expire_days
            exports = plan_exports(stores.dumps, subject.name, made, expire_days, now)
            plans.append(
                dataclasses.replace(backups, deletions=[*backups.deletions, *exports.deletions])
            )
    return plans


class PlannedDeletion(Config):
    kind: str = Field(
        description="database, replica (its copies in the replica store), bucket or config"
    )
    name: str = Field(description="The database's, bucket's or configuration source's name.")
    partition: str
    scope: str = Field(
        description="backup (all copies), dump (hot copy only), replica (the copy in the "
        "replica store), incomplete, snapshot, config or export (the partition is its id)"
    )
    reason: str
    objects: list[str] = Field(description="Every object to delete, in order, by URI.")


class PruneRequest(Config):
    dry_run: bool = Field(
        default=False, description="Record what would be deleted; delete nothing."
    )
    deletions: list[PlannedDeletion] = Field(default_factory=list)


def prune_run_config(
    settings: BackupSettings, plans: list[RetentionPlan], dry_run: bool
) -> dict[str, object]:
    stores = retention_stores(settings)
    deletions = [
        {
            "kind": d.subject.kind,
            "name": d.subject.name,
            "partition": d.day,
            "scope": d.scope,
            "reason": d.reason,
            "objects": object_uris(stores, d),
        }
        for plan in plans
        for d in sorted(plan.deletions, key=lambda d: d.day)[:MAX_DELETIONS_PER_RUN]
    ][:MAX_DELETIONS_PER_RUN]
    return {
        "ops": {"delete_expired_backups": {"config": {"dry_run": dry_run, "deletions": deletions}}}
    }


@op(out={}, description="Delete the planned backups the retention policy still expires.")
def delete_expired_backups(
    context: OpExecutionContext, config: PruneRequest, settings: BackupSettings
) -> Iterator[AssetObservation]:
    stores, configured = retention_stores(settings), subjects(settings)
    asked = [_subject(item) for item in config.deletions]  # refuses a bad kind before deleting
    requested = [subject for subject in configured if subject in asked]
    current = {
        (d.subject, d.day, d.scope): d
        for plan in plan_all(settings, context.instance, requested)
        for d in plan.deletions
    }
    wiped: dict[AssetKey, list[str]] = defaultdict(list)
    records = []
    for item, subject in zip(config.deletions, asked, strict=True):
        deletion = current.get((subject, item.partition, item.scope))
        if subject not in configured:
            action = "skipped: the database or bucket is not configured"
        elif deletion is None:
            action = "skipped: the retention policy keeps it now"
        elif object_uris(stores, deletion) != item.objects:
            action = "skipped: its objects changed since the plan; the next plan covers them"
        elif config.dry_run:
            action = "dry run: would delete"
        else:
            delete_objects(stores, deletion)
            action = "deleted"
            for step in _WIPED_STEPS.get(item.scope, ()):
                wiped[subject_key(subject, step)].append(item.partition)
        context.log.info(f"{subject} {item.partition} ({item.scope}): {action}")
        step = {
            SCOPE_DUMP: names.DUMP,
            SCOPE_SNAPSHOT: names.SNAPSHOT,
            SCOPE_EXPORT: names.EXPORTS,
        }.get(item.scope, names.REPLICA if isinstance(subject, Replica) else names.ARCHIVE)
        records.append(
            AssetObservation(
                asset_key=subject_key(subject, step),
                partition=item.partition,
                description=f"retention: {action}",
                metadata={
                    "action": action,
                    "scope": item.scope,
                    "reason": item.reason,
                    "objects": item.objects,
                },
            )
        )
    _unmark_partitions(context, wiped)
    yield from records  # after the wipe, which would otherwise erase this record


def _subject(item: PlannedDeletion) -> Subject:
    kind = SUBJECT_KINDS.get(item.kind)
    if kind is None:
        raise Failure(
            f"planned deletion of {item.name!r} ({item.partition}): kind {item.kind!r} is not "
            f"{' or '.join(SUBJECT_KINDS)}; nothing was deleted"
        )
    return kind(item.name)


def _unmark_partitions(context: OpExecutionContext, wiped: dict[AssetKey, list[str]]) -> None:
    """Take pruned days off the assets' partition bars, where the instance's storage can."""
    for key, days in wiped.items():
        try:
            context.instance.wipe_asset_partitions(key, days)
        except NotImplementedError:
            context.log.warning(
                "this instance's event storage cannot un-materialize single partitions "
                "(Dagster OSS sqlite/postgres storage), so pruned days stay marked in the "
                "partition bars; the 'retention: deleted' event on each asset says what is gone"
            )
            return


@job(
    name=names.PRUNE_JOB,
    description="Delete expired backups. Launched by retention_sensor with the plan in its run "
    "config; only what the plan lists and the policy still expires is deleted.",
)
def prune_backups_job() -> None:
    delete_expired_backups()
