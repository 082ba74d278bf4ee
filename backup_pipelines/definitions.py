"""All Dagster definitions, assembled in one place from the configuration file."""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    Definitions,
    PreviewWarning,
    define_asset_job,
    definitions,
    multiprocess_executor,
)

from backup_pipelines.assets import (
    AUDIT_REPORT,
    RECOVERY_RUNBOOK,
    REF_IO_MANAGER,
    STORAGE_USAGE,
    audit_report_asset,
    database_assets,
    dump_pool,
    recovery_runbook_asset,
    restore_test_check,
    storage_usage_asset,
)
from backup_pipelines.config import BackupConfig, config_path_from_env, load_config
from backup_pipelines.prune_jobs import prune_backups_job
from backup_pipelines.resources import BackupRefIOManager, BackupSettings
from backup_pipelines.restore_jobs import restore_database_job, restore_test_job
from backup_pipelines.schedules import (
    daily_audit_report_schedule,
    daily_backup_schedule,
    storage_usage_schedule,
    weekly_restore_test_schedule,
)
from backup_pipelines.sensors import (
    backup_alerts_sensor,
    new_archive_restore_test_sensor,
    recovery_runbook_sensor,
    retention_sensor,
)
from backup_pipelines.snapshot_assets import bucket_assets, restore_bucket_job

# Per-partition asset check results are preview in Dagster 1.13; they are what makes the
# checks tab a per-day audit record, so they are used deliberately.
warnings.filterwarnings("ignore", category=PreviewWarning)


# Each step runs in its own process (dumps of different servers run in parallel); a forkserver
# with dagster and this package preloaded starts those processes in a fraction of the time.
STEP_EXECUTOR = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["backup_pipelines.assets"]}}}
)


def build_definitions(config: BackupConfig, config_path: str) -> Definitions:
    partitions = DailyPartitionsDefinition(
        start_date=config.start_date.isoformat(), timezone="UTC", end_offset=1
    )
    databases = list(config.databases)
    assets = [
        asset_def
        for database in databases
        for asset_def in database_assets(
            database,
            partitions,
            dump_pool(database, config),
            dt.timedelta(hours=config.alerts.freshness_hours),
        )
    ]
    assets += [a for name in config.buckets for a in bucket_assets(name, partitions)]
    restore_tests = [restore_test_check(database, partitions) for database in databases]
    backup_job = define_asset_job(
        "daily_backup",
        # Restore tests run on their own (weekly, or per new archive when configured).
        selection=AssetSelection.key_prefixes(["postgres"]) - AssetSelection.checks(*restore_tests),
        partitions_def=partitions,
        description="Dump, archive and verify every configured database, and snapshot and "
        "verify every configured bucket, for one day.",
    )
    runbook_job = define_asset_job(
        "refresh_recovery_runbook",
        selection=AssetSelection.assets(RECOVERY_RUNBOOK),
        description="Rewrite the recovery runbook next to the archives.",
    )
    usage_job = define_asset_job(
        "measure_storage",
        selection=AssetSelection.assets(STORAGE_USAGE),
        description="Measure what the backups use in storage.",
    )
    audit_job = define_asset_job(
        "write_audit_report",
        selection=AssetSelection.assets(AUDIT_REPORT),
        description="Write the audit report (CSV and HTML) next to the archives.",
    )
    settings = BackupSettings(config_path=config_path)
    return Definitions(
        executor=STEP_EXECUTOR,
        assets=[
            *assets,
            recovery_runbook_asset(databases),
            storage_usage_asset(databases, list(config.buckets), config.storage.capacity_gb),
            audit_report_asset(databases),
        ],
        asset_checks=restore_tests,
        jobs=[
            backup_job,
            runbook_job,
            usage_job,
            audit_job,
            restore_test_job,
            restore_database_job,
            prune_backups_job,
            restore_bucket_job,
        ],
        schedules=[
            daily_backup_schedule(backup_job, config.schedule),
            weekly_restore_test_schedule(restore_test_job, config.restore_test.schedule),
            storage_usage_schedule(usage_job),
            daily_audit_report_schedule(audit_job),
        ],
        sensors=[
            new_archive_restore_test_sensor(
                databases, restore_test_job, config.restore_test.test_each_new_archive
            ),
            recovery_runbook_sensor(databases, runbook_job),
            retention_sensor(prune_backups_job),
            backup_alerts_sensor(databases),
        ],
        resources={
            "settings": settings,
            REF_IO_MANAGER: BackupRefIOManager(settings=settings),
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily by Dagster's tools, from the file named by BACKUP_PIPELINES_CONFIG."""
    path = config_path_from_env()
    return build_definitions(load_config(path), str(path))
