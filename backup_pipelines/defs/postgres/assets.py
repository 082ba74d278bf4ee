"""Per database: postgres/<db>/dump -> archive -> verification, daily-partitioned, with their
checks. Where a dump is taken (core/dump.py), archived (core/archive.py) and checked
(core/verification.py); each asset calls one of those and reports metadata and check results.
"""

import datetime as dt
from collections.abc import Iterator

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    Output,
    PartitionsDefinition,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.archive import ArchiveError, archive_dump
from backup_pipelines.core.config import BackupConfig, ConfigError, expand_env
from backup_pipelines.core.dump import take_dump
from backup_pipelines.core.manifest import BackupRef, Manifest, read_manifest
from backup_pipelines.core.postgres import Connection, PostgresError
from backup_pipelines.core.verification import (
    check_archive,
    check_dump_complete,
    check_size_change,
    recent_sizes,
)
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, per_day_check_spec, readable


def dump_pool(database: str, config: BackupConfig) -> str:
    """One pool per database server, so the instance caps parallel dumps on each server."""
    server = config.databases[database].server
    if server is None:
        try:
            url = expand_env(config.databases[database].url, f"databases.{database}.url")
            server = Connection.from_url(database, url).server
        except (ConfigError, PostgresError):
            server = database  # the URL is only known at run time; pool by database
    return names.dump_pool(server)


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


def database_assets(
    database: str, partitions: PartitionsDefinition, pool: str, freshness: dt.timedelta
) -> list[AssetsDefinition]:
    dump_key, archive_key, verification_key = (
        names.database_key(database, step) for step in names.BACKUP_STEPS
    )
    group = names.database_group(database)

    def spec(name: str, key: AssetKey, description: str, blocking: bool = True) -> AssetCheckSpec:
        return per_day_check_spec(name, key, partitions, description, blocking=blocking)

    @asset(
        key=dump_key,
        group_name=group,
        partitions_def=partitions,
        pool=pool,
        io_manager_key=names.REF_IO_MANAGER,
        kinds={"postgres"},
        description=f"pg_dump of {database}, streamed compressed into the dump store "
        "(only today's partition can be taken).",
        check_specs=[
            spec(
                names.DUMP_COMPLETE,
                dump_key,
                "The stored dump has its recorded size, pg_restore "
                "reads it, and every relation that held rows has its data entry.",
            ),
        ],
    )
    def dump(context: AssetExecutionContext, settings: BackupSettings) -> Iterator[object]:
        stores = settings.stores()
        ref, manifest = take_dump(
            settings.connection(database),
            stores.dumps,
            context.partition_key,
            settings.dump_settings(),
        )
        yield Output(
            ref,
            metadata={
                **backup_metadata(ref, manifest),
                "manifest_uri": MetadataValue.path(stores.dumps.uri(ref.manifest_key)),
                "dump_seconds": manifest.dump_seconds,
            },
        )
        outcome = check_dump_complete(
            stores.dumps,
            ref,
            manifest,
            settings.client_tools(),
            settings.archive_key(),
            settings.configured_name(database),
        )
        yield check_result(outcome, dump_key)

    @asset(
        key=archive_key,
        group_name=group,
        partitions_def=partitions,
        io_manager_key=names.REF_IO_MANAGER,
        ins={"dump": AssetIn(dump_key)},
        description=f"Archive copy of {database}'s dump (server-side copy, proved identical).",
    )
    def archive(
        context: AssetExecutionContext, settings: BackupSettings, dump: BackupRef
    ) -> Output[BackupRef]:
        stores = settings.stores()
        retain_until = settings.config().archive_retain_until(dump.database, dump.partition)
        ref, manifest = archive_dump(stores.dumps, stores.archive, dump, retain_until)
        metadata = backup_metadata(ref, manifest)
        storage_class = stores.archive.storage_class(ref.object_key)
        if storage_class is not None:
            metadata["storage_class"] = storage_class
        if retain_until is not None:
            metadata["object_lock_retain_until"] = retain_until.isoformat()
        return Output(ref, metadata=metadata)

    @asset(
        key=verification_key,
        group_name=group,
        partitions_def=partitions,
        ins={"archive": AssetIn(archive_key)},
        description=f"Integrity of {database}'s archive copy, read back whole.",
        # The UI's freshness state; alerts come from backup_alerts_sensor.
        freshness_policy=FreshnessPolicy.time_window(fail_window=freshness),
        check_specs=[
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
    def verification(
        context: AssetExecutionContext, settings: BackupSettings, archive: BackupRef
    ) -> MaterializeResult:
        config, stores = settings.config(), settings.stores()
        manifest = read_manifest(stores.archive, database, archive.partition)
        if manifest is None:
            raise ArchiveError(
                f"database {database!r}, {archive.partition}: the archive copy has no manifest "
                f"(the archive step did not finish); materialize {archive_key.to_user_string()} "
                "for that day again"
            )
        outcomes = check_archive(
            stores.archive,
            archive,
            manifest,
            settings.client_tools(),
            settings.archive_key(),
            settings.configured_name(database),
        )
        history = recent_sizes(
            stores.archive, database, archive.partition, config.verification.size_history
        )
        outcomes.append(
            check_size_change(manifest.size_bytes, history, config.verification.size_change_warn)
        )
        passed = sum(outcome.passed for outcome in outcomes)
        return MaterializeResult(
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

    return [dump, archive, verification]
