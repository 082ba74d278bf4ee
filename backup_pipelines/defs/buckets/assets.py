"""Per configured bucket: s3/<name>/snapshot -> s3/<name>/verification, daily-partitioned.
Logic: core/buckets/snapshots.py."""

import datetime as dt
import random

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from backup_pipelines import names, storage
from backup_pipelines.core.buckets.snapshots import SnapshotError, take_snapshot, verify_snapshot
from backup_pipelines.core.common.stores import source_bucket_store
from backup_pipelines.core.postgres.dump import require_day_open
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import (
    check_result,
    per_day_check_spec,
    readable,
    run_submitted_at,
)


def snapshot_store(settings: BackupSettings) -> "storage.S3Store":
    store = settings.stores().snapshots
    if store is None:
        raise Failure("bucket snapshots need storage.s3")
    return store


def bucket_assets(name: str, partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    snapshot, verification = (names.bucket_key(name, step) for step in names.BUCKET_STEPS)
    group = names.bucket_group(name)

    @asset(
        key=snapshot,
        group_name=group,
        partitions_def=partitions,
        kinds={"s3"},
        description=f"Incremental snapshot of bucket {name!r}: new and changed objects copied "
        "server-side, the rest referenced (only today's partition can be taken).",
    )
    def take(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        require_day_open(name, context.partition_key, run_submitted_at(context))
        store = snapshot_store(settings)
        source = source_bucket_store(settings.config(), name, store)
        manifest = take_snapshot(
            source, store, name, context.partition_key, dt.datetime.now(dt.UTC)
        )
        return MaterializeResult(
            metadata=readable(
                {
                    "source": manifest.source,
                    "manifest_uri": MetadataValue.path(
                        store.uri(f"{name}/{manifest.day}/manifest.json")
                    ),
                    "objects": len(manifest.entries),
                    "copied": manifest.copied,
                    "referenced": manifest.referenced,
                    "copied_bytes": manifest.bytes_copied,
                }
            )
        )

    @asset(
        key=verification,
        group_name=group,
        partitions_def=partitions,
        deps=[snapshot],
        description=f"Integrity of bucket {name!r}'s snapshot.",
        check_specs=[
            per_day_check_spec(
                names.SNAPSHOT_MANIFEST,
                verification,
                partitions,
                "The manifest lists exactly what the source listing held.",
            ),
            per_day_check_spec(
                names.SNAPSHOT_OBJECTS,
                verification,
                partitions,
                "Every (or a sampled share of) stored object exists with its size and checksum.",
            ),
        ],
    )
    def verify(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        fraction = settings.config().buckets[name].verify_fraction
        try:
            outcomes = verify_snapshot(
                snapshot_store(settings), name, context.partition_key, fraction, random.Random()
            )
        except SnapshotError as error:
            raise Failure(str(error)) from None
        return MaterializeResult(
            metadata=readable({"checks_failed": [o.name for o in outcomes if not o.passed]}),
            check_results=[check_result(outcome, verification) for outcome in outcomes],
        )

    return [take, verify]
