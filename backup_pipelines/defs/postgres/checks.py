"""Where a backup is restore-tested: the `restore_test` check on postgres/<db>/verification.
The throw-away database's life and the comparison with the manifest are core/restore_test.py."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    PartitionsDefinition,
    asset_check,
)

from backup_pipelines import names
from backup_pipelines.core.restore import archive_manifest
from backup_pipelines.core.restore_test import RestoreTestReport, run_restore_test
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, per_day_checks


def restore_test_report(
    settings: BackupSettings, database: str, day: str | None
) -> RestoreTestReport:
    """Restore-test `database`'s archive of `day` (default: its newest archive)."""
    archive = settings.stores().archive
    return run_restore_test(
        archive,
        archive_manifest(archive, database, day),
        settings.scratch_connection(database),
        settings.restore_test_settings(database),
    )


def restore_test_check(database: str, partitions: PartitionsDefinition) -> AssetChecksDefinition:
    verification_key = names.database_key(database, names.VERIFICATION)

    def restore_test(
        context: AssetCheckExecutionContext, settings: BackupSettings
    ) -> AssetCheckResult:
        report = restore_test_report(settings, database, context.partition_key)
        return check_result(report.outcome(), verification_key)

    with per_day_checks():
        return asset_check(
            asset=verification_key,
            name=names.RESTORE_TEST,
            partitions_def=partitions,
            pool=names.RESTORE_TEST_POOL,
            description="The archive restores into a throw-away database on the scratch server, "
            "which then holds every table with the snapshot's row count, every constraint valid, "
            "sequences in step and the configured assertions true. Metadata: restore duration "
            "(RTO).",
        )(restore_test)
