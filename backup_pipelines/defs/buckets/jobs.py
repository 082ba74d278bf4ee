"""The job that restores a bucket snapshot into a bucket and prefix of your choice."""

from dagster import Config, Failure, OpExecutionContext, job, op
from pydantic import Field

from backup_pipelines import names, storage
from backup_pipelines.core.buckets.snapshots import SnapshotError, restore_snapshot, snapshot_days
from backup_pipelines.defs.buckets.assets import snapshot_store
from backup_pipelines.defs.resources import BackupSettings


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
    store = snapshot_store(settings)
    days = snapshot_days(store, config.name)
    day = config.partition or (days[-1] if days else "")
    target = storage.S3Store(store.client, config.target_bucket, config.target_prefix)
    try:
        copied = restore_snapshot(
            store, config.name, day, target, allow_non_empty=config.allow_non_empty
        )
    except SnapshotError as error:
        raise Failure(str(error)) from None
    context.log.info(f"restored {copied} objects of {config.name} ({day}) to {target.uri('')}")


@job(name=names.RESTORE_BUCKET_JOB, description="Restore a bucket snapshot into a bucket/prefix.")
def restore_bucket_job() -> None:
    restore_bucket_snapshot()
