"""Per database and day: postgres/<db>/replica, the second copy of the verified archive in the
replica store, with its blocking check. Where the copy is made and proved:
core/postgres/replica.py. Never part of a backup run: the primary chain neither waits for it
nor fails with it; a replica that cannot be made fails only this asset (and alerts)."""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.config import ConfigError
from backup_pipelines.core.postgres.archive import ArchiveError
from backup_pipelines.core.postgres.replica import archived_manifest, replicate_archive
from backup_pipelines.defs.records import latest_check_record
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, per_day_check_spec, readable
from backup_pipelines.storage import StorageError


def unverified_reason(instance: DagsterInstance, database: str, day: str) -> str | None:
    """Why `database`'s archive of `day` does not count as verified (None: it does)."""
    key = names.database_key(database, names.VERIFICATION)
    for check in names.VERIFYING_CHECKS:
        record = latest_check_record(instance, key, check, day)
        if record is None:
            return f"{check} was never evaluated for that day"
        if not record.passed:
            return f"its newest {check} failed: {record.description}"
    return None


def replica_asset(database: str, partitions: PartitionsDefinition, kind: str) -> AssetsDefinition:
    key = names.database_key(database, names.REPLICA)

    @asset(
        key=key,
        group_name=names.database_group(database),
        partitions_def=partitions,
        deps=[names.database_key(database, names.VERIFICATION)],
        kinds={kind},
        description=f"The second copy of {database}'s verified archive of the day, in the "
        "replica store (replica:): copied server-side where the stores allow it, streamed "
        "otherwise, and read back whole there before its manifest commits it. Made by job "
        f"{names.REPLICATE_JOB} after each verification, never by a backup run.",
        check_specs=[
            per_day_check_spec(
                names.REPLICA_VERIFIED,
                key,
                partitions,
                "The copy in the replica store, read back whole, has the archive's size and "
                "SHA-256, and pg_restore reads every byte of it with every relation's data. A "
                "copy that fails is removed: nothing unproved is committed there.",
            )
        ],
    )
    def replica(context: AssetExecutionContext, settings: BackupSettings) -> Iterator[object]:
        day = context.partition_key
        unverified = unverified_reason(context.instance, database, day)
        if unverified:
            raise Failure(
                f"database {database!r}, {day}: the archive is not verified ({unverified}); "
                "only a verified archive is replicated. Verify that day first"
            )
        outcome = replica_outcome(settings, database, day)
        if not outcome.passed:
            # Recorded before the failure, so the check history keeps the evidence.
            yield check_result(outcome, key)
            raise Failure(outcome.description)
        yield MaterializeResult(
            metadata=readable(
                {
                    "uri": MetadataValue.path(str(outcome.metadata["uri"])),
                    "source_uri": MetadataValue.path(str(outcome.metadata["source_uri"])),
                    "sha256": outcome.metadata["sha256_actual"],
                    "size_bytes": outcome.metadata["size_actual"],
                }
            ),
            check_results=[check_result(outcome, key)],
        )

    return replica


def replica_outcome(settings: BackupSettings, database: str, day: str) -> CheckOutcome:
    """Replicate and prove; a replica store that cannot even be reached (bad settings, missing
    credentials) is a failed check with the reason, like any other failed copy."""
    try:
        archive = settings.stores().archive
        manifest = archived_manifest(archive, database, day)
    except (ArchiveError, ConfigError, StorageError) as error:
        raise Failure(f"the archive store: {error}") from None
    replica, problem = settings.usable_replica_store()
    if replica is None:
        return CheckOutcome(
            names.REPLICA_VERIFIED,
            False,
            f"database {database!r}, {day}: the replica store is not usable: {problem}",
        )
    return replicate_archive(
        archive,
        replica,
        manifest,
        settings.client_tools(),
        settings.archive_key(),
        settings.database(database).configured_name,
        settings.config().archive_retain_until(database, day, replica=True),
    )
