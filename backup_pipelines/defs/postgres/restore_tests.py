"""Where a backup is restore-tested: postgres/<db>/restore_test, one partition per day proven
restorable, downstream of verification. The throw-away database's life and the comparison
with the manifest are core/postgres/restore_test.py.

Materialized only by what asks for a restore test (the restore_test job, its weekly schedule,
the new-archive sensor, a backfill or a launch that selects it), never by a backup run. A
failed test records its evidence on the check and fails the partition, so the partition bar
shows exactly the days that restored.

The failover drill is the same test of the replica: postgres/<db>/replica_restore_test,
downstream of postgres/<db>/replica, reads only the replica store (it builds no other store,
so it needs none of the primary's credentials).
"""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.postgres.restore import RestoreError, archive_manifest
from backup_pipelines.core.postgres.restore_test import RestoreTestReport, run_restore_test
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, per_day_check_spec


def restore_test_report(
    settings: BackupSettings, database: str, day: str | None, *, from_replica: bool = False
) -> RestoreTestReport:
    """Restore-test `database`'s archive of `day` (default: its newest archive), read from the
    archive store or, `from_replica`, from the replica store alone."""
    archive = settings.replica_store() if from_replica else settings.stores().archive
    return run_restore_test(
        archive,
        archive_manifest(archive, database, day),
        settings.scratch_connection(database),
        settings.restore_test_settings(database),
    )


def restore_test_asset(
    database: str, partitions: PartitionsDefinition, *, from_replica: bool = False
) -> AssetsDefinition:
    step, upstream = (
        (names.REPLICA_RESTORE_TEST, names.REPLICA)
        if from_replica
        else (names.RESTORE_TEST, names.VERIFICATION)
    )
    key = names.database_key(database, step)
    when = (
        f"The failover drill: the day's copy of {database} in the replica store, read from there "
        "alone (no credential of the primary store is used),"
        if from_replica
        else f"The day's archive of {database},"
    )
    asked_by = (
        f"job {names.FAILOVER_DRILL_JOB}, its monthly schedule, a backfill"
        if from_replica
        else "job restore_test, its schedule, the new-archive sensor, a backfill"
    )

    @asset(
        key=key,
        group_name=names.database_group(database),
        partitions_def=partitions,
        deps=[names.database_key(database, upstream)],
        pool=names.RESTORE_TEST_POOL,
        kinds={"postgres"},
        description=f"{when} restored into a throw-away database on the scratch server and "
        "compared with its manifest; a materialized day is a day proven restorable. Runs only "
        f"when asked for ({asked_by}), never with a backup.",
        check_specs=[
            per_day_check_spec(
                names.RESTORED_DATA_MATCHES,
                key,
                partitions,
                "The restored copy holds every table with the snapshot's row count, every "
                "constraint valid, sequences in step and the configured assertions true; the "
                "dump's header names the configured database. Metadata: the restore duration "
                "(RTO) and what was compared.",
            )
        ],
    )
    def restore_test(context: AssetExecutionContext, settings: BackupSettings) -> Iterator[object]:
        try:
            report = restore_test_report(
                settings, database, context.partition_key, from_replica=from_replica
            )
        except RestoreError as error:
            raise Failure(
                f"restore test of {database!r} ({context.partition_key}): {error}"
            ) from None
        outcome = report.outcome()
        if not outcome.passed:
            # Recorded before the failure, so the check history keeps the evidence.
            yield check_result(outcome, key)
            raise Failure(
                f"restore test of {database!r} ({report.partition}) failed: {outcome.description}"
            )
        yield MaterializeResult(
            metadata={
                "archive_uri": MetadataValue.path(report.archive_uri),
                "restore_duration_seconds": round(report.restore_seconds, 3),
                "rows_compared": report.validation.rows_compared if report.validation else 0,
            },
            check_results=[check_result(outcome, key)],
        )

    return restore_test
