"""S3 bucket snapshots: per bucket snapshot -> verification, and the restore job."""

from dagster import Definitions

from backup_pipelines.defs.buckets.assets import bucket_assets
from backup_pipelines.defs.buckets.jobs import restore_bucket_job
from backup_pipelines.defs.project import Project


def buckets_definitions(project: Project) -> Definitions:
    return Definitions(
        assets=[a for name in project.buckets for a in bucket_assets(name, project.partitions)],
        jobs=[restore_bucket_job],
    )
