"""Per database: postgres/<db>/dump -> archive -> verification, daily-partitioned, with their
checks, taken in one step per database. Where a dump is taken (core/postgres/dump.py),
archived (core/postgres/archive.py) and checked (core/postgres/verification.py); each asset's
part calls one of those and reports its metadata and check results.
"""

import datetime as dt
from collections.abc import Iterator
from collections.abc import Set as AbstractSet

from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    multi_asset,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import BackupConfig, ConfigError, expand_env
from backup_pipelines.core.common.postgres_client import Connection, PostgresError
from backup_pipelines.core.postgres.archive import ArchiveError, archive_dump
from backup_pipelines.core.postgres.dump import take_dump, utc_today
from backup_pipelines.core.postgres.manifest import (
    BackupRef,
    Manifest,
    load_ref,
    read_manifest,
    save_ref,
)
from backup_pipelines.core.postgres.verification import (
    check_archive,
    check_dump_complete,
    check_size_change,
    recent_sizes,
)
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import (
    check_result,
    per_day_check_spec,
    readable,
    run_submitted_at,
)


def database_dump_pool(database: str, config: BackupConfig) -> str:
    """One pool per database server, so the instance caps parallel dumps on each server."""
    server = config.databases[database].server
    if server is None:
        try:
            url = expand_env(config.databases[database].url, f"databases.{database}.url")
            server = Connection.from_url(database, url).server
        except (ConfigError, PostgresError):
            server = database  # the URL is only known at run time; pool by database
    return names.server_dump_pool(server)


def backup_metadata(ref: BackupRef, manifest: Manifest) -> dict[str, object]:
    return readable(
        {
            "uri": MetadataValue.path(ref.uri),
            "sha256": ref.sha256,
            "size_bytes": ref.size_bytes,
            "snapshot_taken_at": manifest.snapshot_taken_at,
            "server_version": manifest.server_version,
            "pg_dump_version": manifest.pg_dump_version,
            "compression": manifest.compression,
            "relations": len(manifest.relations),
            "rows": manifest.total_rows,
        }
    )


def database_backup(
    database: str, partitions: PartitionsDefinition, pool: str, freshness: dt.timedelta
) -> AssetsDefinition:
    """The database's dump, archive and verification: three assets with their own checks and
    materializations, taken in one step (one process per database and day, not three). The
    step can subset: a launch or a re-execution from asset failure runs only what it selects,
    and a later asset reads what an earlier one left from the refs store."""
    dump_key, archive_key, verification_key = (
        names.database_key(database, step) for step in names.BACKUP_STEPS
    )
    group = names.database_group(database)

    def spec(name: str, key: AssetKey, description: str, blocking: bool = True) -> AssetCheckSpec:
        return per_day_check_spec(name, key, partitions, description, blocking=blocking)

    @multi_asset(
        name=names.database_backup_op(database),
        partitions_def=partitions,
        # Holds the server's slot through archive and verification too: the chain is one step.
        pool=pool,
        can_subset=True,
        specs=[
            AssetSpec(
                dump_key,
                group_name=group,
                kinds={"postgres"},
                skippable=True,
                description=f"pg_dump of {database}, streamed compressed into the dump store "
                "(only today's partition can be taken).",
            ),
            AssetSpec(
                archive_key,
                deps=[dump_key],
                group_name=group,
                skippable=True,
                description=f"Archive copy of {database}'s dump (server-side copy, proved "
                "identical).",
            ),
            AssetSpec(
                verification_key,
                deps=[archive_key],
                group_name=group,
                skippable=True,
                description=f"Integrity of {database}'s archive copy, read back whole.",
                # The UI's freshness state; alerts come from backup_alerts_sensor.
                freshness_policy=FreshnessPolicy.time_window(fail_window=freshness),
            ),
        ],
        check_specs=[
            spec(
                names.DUMP_COMPLETE,
                dump_key,
                "The stored dump has its recorded size, pg_restore "
                "reads it, and every relation that held rows has its data entry.",
            ),
            spec(
                names.ARCHIVE_CHECKSUM,
                verification_key,
                "The archive's SHA-256 and size, recomputed from storage, match the dump's.",
            ),
            spec(
                names.ARCHIVE_CONTENTS,
                verification_key,
                "pg_restore reads the archive and every relation with rows has its data.",
            ),
            spec(
                names.SIZE_CHANGE,
                verification_key,
                "The archive's size is within the configured change of recent backups.",
                blocking=False,
            ),
        ],
    )
    def backup(context: AssetExecutionContext, settings: BackupSettings) -> Iterator[object]:
        selected, day = context.selected_asset_keys, context.partition_key
        checks = context.selected_asset_check_keys
        if dump_key in selected:
            result = take_dump_result(settings, database, day, run_submitted_at(context))
            if day != utc_today():
                context.log.info(
                    f"the run asked for {day}'s backup before that day ended and started after "
                    "it: the snapshot was taken now, for that day, as asked (metadata: "
                    "submitted_at, start_delay_seconds)"
                )
            yield only_selected_checks(result, checks)
            (dump_check,) = result.check_results or ()
            if not dump_check.passed:
                # Blocking: nothing is archived from a dump that failed its check. Dagster fails
                # the step for a reported check; a deselected one must fail it here.
                if AssetCheckKey(dump_key, names.DUMP_COMPLETE) not in checks:
                    raise Failure(
                        f"database {database!r}, {day}: the dump failed {names.DUMP_COMPLETE} "
                        f"({dump_check.description}); nothing was archived"
                    )
                return
        if archive_key in selected:
            yield archive_result(settings, database, day)
        if verification_key in selected:
            yield only_selected_checks(verification_result(settings, database, day), checks)

    return backup


def only_selected_checks(
    result: MaterializeResult, selected: AbstractSet[AssetCheckKey]
) -> MaterializeResult:
    """A launch may deselect a check; its outcome is then not reported (the dump's still gates)."""
    return MaterializeResult(
        asset_key=result.asset_key,
        metadata=result.metadata,
        check_results=[
            check
            for check in result.check_results or ()
            if AssetCheckKey(result.asset_key, check.check_name) in selected
        ],
    )


def take_dump_result(
    settings: BackupSettings, database: str, day: str, submitted_at: dt.datetime | None = None
) -> MaterializeResult:
    stores, resolved = settings.stores(), settings.database(database)
    ref, manifest = take_dump(
        resolved.connection, stores.dumps, day, settings.dump_settings(), submitted_at
    )
    save_ref(stores.refs, names.DUMP, ref)
    outcome = check_dump_complete(
        stores.dumps,
        ref,
        manifest,
        settings.client_tools(),
        settings.archive_key(),
        resolved.configured_name,
    )
    dump_key = names.database_key(database, names.DUMP)
    return MaterializeResult(
        asset_key=dump_key,
        metadata={
            **backup_metadata(ref, manifest),
            "manifest_uri": MetadataValue.path(stores.dumps.uri(ref.manifest_key)),
            "dump_seconds": manifest.dump_seconds,
            # Known for a run of the deployment (when it was submitted), not for a direct call.
            **(
                {
                    "submitted_at": manifest.submitted_at,
                    "start_delay_seconds": manifest.start_delay_seconds,
                }
                if manifest.submitted_at
                else {}
            ),
        },
        check_results=[check_result(outcome, dump_key)],
    )


def archive_result(settings: BackupSettings, database: str, day: str) -> MaterializeResult:
    stores = settings.stores()
    dump = load_ref(stores.refs, database, names.DUMP, day)
    retain_until = settings.config().archive_retain_until(database, day)
    ref, manifest = archive_dump(stores.dumps, stores.archive, dump, retain_until)
    save_ref(stores.refs, names.ARCHIVE, ref)
    metadata = backup_metadata(ref, manifest)
    storage_class = stores.archive.storage_class(ref.object_key)
    if storage_class is not None:
        metadata["storage_class"] = storage_class
    if retain_until is not None:
        metadata["object_lock_retain_until"] = retain_until.isoformat()
    return MaterializeResult(
        asset_key=names.database_key(database, names.ARCHIVE), metadata=metadata
    )


def verification_result(settings: BackupSettings, database: str, day: str) -> MaterializeResult:
    config, stores = settings.config(), settings.stores()
    archive = load_ref(stores.refs, database, names.ARCHIVE, day)
    manifest = read_manifest(stores.archive, database, day)
    if manifest is None:
        raise ArchiveError(
            f"database {database!r}, {day}: the archive copy has no manifest (the archive step "
            f"did not finish); materialize {names.DATABASE_PREFIX}/{database}/{names.ARCHIVE} "
            "for that day again"
        )
    outcomes = check_archive(
        stores.archive,
        archive,
        manifest,
        settings.client_tools(),
        settings.archive_key(),
        settings.database(database).configured_name,
    )
    history = recent_sizes(stores.archive, database, day, config.verification.size_history)
    outcomes.append(
        check_size_change(manifest.size_bytes, history, config.verification.size_change_warn)
    )
    passed = sum(outcome.passed for outcome in outcomes)
    verification_key = names.database_key(database, names.VERIFICATION)
    return MaterializeResult(
        asset_key=verification_key,
        metadata=readable(
            {
                "uri": MetadataValue.path(archive.uri),
                "verified_sha256": archive.sha256,
                "size_bytes": manifest.size_bytes,
                "checks": f"{passed} of {len(outcomes)} passed",
                "checks_failed": [o.name for o in outcomes if not o.passed],
            }
        ),
        check_results=[check_result(outcome, verification_key) for outcome in outcomes],
    )
