"""Dagster wiring for bucket snapshots: s3/<name>/snapshot -> s3/<name>/verification per
configured bucket, and the job that restores a snapshot into a bucket. Logic: snapshots.py."""

import datetime as dt
import random

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    PartitionsDefinition,
    asset,
    job,
    op,
)
from pydantic import Field

from backup_pipelines.assets import check_result
from backup_pipelines.dump import require_today
from backup_pipelines.resources import BackupSettings
from backup_pipelines.snapshots import (
    SnapshotError,
    restore_snapshot,
    snapshot_days,
    take_snapshot,
    verify_snapshot,
)
from backup_pipelines.storage import S3Store, source_bucket_store

RESTORE_BUCKET_JOB = "restore_bucket"
# The checks whose passing makes a snapshot verified (for retention).
SNAPSHOT_CHECKS = ("snapshot_manifest", "snapshot_objects")


def snapshot_key(name: str, step: str) -> AssetKey:
    return AssetKey(["s3", name, step])


def _snapshot_store(settings: BackupSettings) -> S3Store:
    store = settings.stores().snapshots
    if store is None:
        raise Failure("bucket snapshots need storage.s3")
    return store


def bucket_assets(name: str, partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    snapshot, verification = snapshot_key(name, "snapshot"), snapshot_key(name, "verification")
    group = f"s3_{name}"

    @asset(
        key=snapshot,
        group_name=group,
        partitions_def=partitions,
        kinds={"s3"},
        description=f"Incremental snapshot of bucket {name!r}: new and changed objects copied "
        "server-side, the rest referenced (only today's partition can be taken).",
    )
    def take(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        require_today(name, context.partition_key)
        store = _snapshot_store(settings)
        source = source_bucket_store(settings.config(), name, store)
        manifest = take_snapshot(
            source, store, name, context.partition_key, dt.datetime.now(dt.UTC)
        )
        return MaterializeResult(
            metadata={
                "source": manifest.source,
                "manifest_uri": MetadataValue.path(
                    store.uri(f"{name}/{manifest.day}/manifest.json")
                ),
                "objects": len(manifest.entries),
                "copied": manifest.copied,
                "referenced": manifest.referenced,
                "bytes_copied": manifest.bytes_copied,
            }
        )

    @asset(
        key=verification,
        group_name=group,
        partitions_def=partitions,
        deps=[snapshot],
        description=f"Integrity of bucket {name!r}'s snapshot.",
        check_specs=[
            AssetCheckSpec(
                "snapshot_manifest",
                asset=verification,
                blocking=True,
                partitions_def=partitions,
                description="The manifest lists exactly what the source listing held.",
            ),
            AssetCheckSpec(
                "snapshot_objects",
                asset=verification,
                blocking=True,
                partitions_def=partitions,
                description="Every (or a sampled share of) stored object exists with its size "
                "and checksum.",
            ),
        ],
    )
    def verify(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        fraction = settings.config().buckets[name].verify_fraction
        try:
            outcomes = verify_snapshot(
                _snapshot_store(settings), name, context.partition_key, fraction, random.Random()
            )
        except SnapshotError as error:
            raise Failure(str(error)) from None
        return MaterializeResult(
            metadata={"checks_failed": [o.name for o in outcomes if not o.passed]},
            check_results=[check_result(outcome, verification) for outcome in outcomes],
        )

    return [take, verify]


class RestoreBucketRequest(Config):
    name: str = Field(description="The configured bucket whose snapshot to restore.")
    partition: str | None = Field(default=None, description="Day; default: the newest snapshot.")
    target_bucket: str = Field(description="Bucket to copy the snapshot's objects into.")
    target_prefix: str = Field(default="", description="Prefix in the target bucket.")
    allow_non_empty: bool = Field(
        default=False, description="Write into a non-empty bucket/prefix, overwriting keys."
    )


@op(description="Copy a bucket snapshot back into a bucket and prefix of your choice.")
def restore_bucket_snapshot(
    context: OpExecutionContext, config: RestoreBucketRequest, settings: BackupSettings
) -> None:
    if config.name not in settings.config().buckets:
        raise Failure(
            f"restore_bucket: unknown bucket {config.name!r}; configured: "
            f"{', '.join(settings.config().buckets)}"
        )
    store = _snapshot_store(settings)
    days = snapshot_days(store, config.name)
    day = config.partition or (days[-1] if days else "")
    target = S3Store(store.client, config.target_bucket, config.target_prefix)
    try:
        copied = restore_snapshot(
            store, config.name, day, target, allow_non_empty=config.allow_non_empty
        )
    except SnapshotError as error:
        raise Failure(str(error)) from None
    context.log.info(f"restored {copied} objects of {config.name} ({day}) to {target.uri('')}")


@job(name=RESTORE_BUCKET_JOB, description="Restore a bucket snapshot into a bucket/prefix.")
def restore_bucket_job() -> None:
    restore_bucket_snapshot()
