"""The job that measures what the backups use."""

from dagster import AssetSelection, define_asset_job

from backup_pipelines import names

storage_usage_job = define_asset_job(
    names.STORAGE_USAGE_JOB,
    selection=AssetSelection.assets(names.STORAGE_USAGE),
    description="Measure what the backups use in storage.",
)
