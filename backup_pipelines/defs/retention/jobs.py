"""The retention plan as Dagster sees it: planning for every database and bucket, and the prune
job that deletes exactly what a plan listed (and the policy still expires). Thin wiring over
core/retention/prune.py. A plan's subject is a database name, or `s3/<name>` for a bucket's snapshots."""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator

from dagster import AssetKey, AssetObservation, Config, DagsterInstance, OpExecutionContext, job, op
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.retention.prune import (
    SCOPE_BACKUP,
    SCOPE_DUMP,
    SCOPE_SNAPSHOT,
    DatabasePlan,
    delete_objects,
    object_uris,
    plan_database,
    plan_snapshots,
)
from backup_pipelines.defs.records import verification_outcomes
from backup_pipelines.defs.resources import BackupSettings

# A run's plan stays reviewable in the UI; the next sensor tick plans the rest.
MAX_DELETIONS_PER_RUN = 500
# What a deletion removes from the UI's partition bars, by scope.
_WIPED_STEPS = {
    SCOPE_BACKUP: names.DATABASE_STEPS,
    SCOPE_DUMP: (names.DUMP,),
    SCOPE_SNAPSHOT: names.BUCKET_STEPS,
}
_BUCKET = f"{names.BUCKET_PREFIX}/"


def subjects(settings: BackupSettings) -> list[str]:
    config = settings.config()
    return [*config.databases, *(f"{_BUCKET}{name}" for name in config.buckets)]


def subject_key(subject: str, step: str) -> AssetKey:
    if subject.startswith(_BUCKET):
        return names.bucket_key(subject.removeprefix(_BUCKET), step)
    return names.database_key(subject, step)


def plan_all(
    settings: BackupSettings, instance: DagsterInstance, only: list[str] | None = None
) -> list[DatabasePlan]:
    """Plans for every database and bucket (or the subjects in `only`)."""
    config, stores = settings.config(), settings.stores()
    today = dt.datetime.now(dt.UTC).date()
    plans = []
    for subject in subjects(settings) if only is None else only:
        verification = subject_key(subject, names.VERIFICATION)
        if subject.startswith(_BUCKET):
            name = subject.removeprefix(_BUCKET)
            assert stores.snapshots is not None
            outcomes = verification_outcomes(instance, verification, names.SNAPSHOT_CHECKS)
            rules = config.bucket_retention_for(name)
            plans.append(plan_snapshots(stores.snapshots, name, rules, outcomes, today))
        else:
            outcomes = verification_outcomes(instance, verification, names.VERIFYING_CHECKS)
            plans.append(
                plan_database(stores, subject, config.retention_for(subject), outcomes, today)
            )
    return plans


class PlannedDeletion(Config):
    database: str
    partition: str
    scope: str = Field(
        description="backup (all copies), dump (hot copy only), incomplete or snapshot"
    )
    reason: str
    objects: list[str] = Field(description="Every object to delete, in order, by URI.")


class PruneRequest(Config):
    dry_run: bool = Field(
        default=False, description="Record what would be deleted; delete nothing."
    )
    deletions: list[PlannedDeletion] = Field(default_factory=list)


def prune_run_config(
    settings: BackupSettings, plans: list[DatabasePlan], dry_run: bool
) -> dict[str, object]:
    stores = settings.stores()
    deletions = [
        {
            "database": d.database,
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
    stores, configured = settings.stores(), subjects(settings)
    requested = sorted({d.database for d in config.deletions} & set(configured))
    current = {
        (d.database, d.day, d.scope): d
        for plan in plan_all(settings, context.instance, requested)
        for d in plan.deletions
    }
    wiped: dict[AssetKey, list[str]] = defaultdict(list)
    records = []
    for item in config.deletions:
        deletion = current.get((item.database, item.partition, item.scope))
        if item.database not in configured:
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
                wiped[subject_key(item.database, step)].append(item.partition)
        context.log.info(f"{item.database} {item.partition} ({item.scope}): {action}")
        step = {SCOPE_DUMP: names.DUMP, SCOPE_SNAPSHOT: names.SNAPSHOT}.get(
            item.scope, names.ARCHIVE
        )
        records.append(
            AssetObservation(
                asset_key=subject_key(item.database, step),
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
