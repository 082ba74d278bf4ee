"""The per-database asset chain: postgres/<db>/dump → archive → verification, its restore-test
check, and the recovery runbook downstream of every verification.

Thin wiring only: each asset calls one plain function (dump.py, archive.py, verification.py,
restore_test.py, runbook.py) and reports its outcome as metadata and asset check results.
"""

import datetime as dt
import re
from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
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
    asset_check,
)

from backup_pipelines.archive import ArchiveError, archive_dump
from backup_pipelines.audit import AUDIT_CSV_KEY, AUDIT_HTML_KEY, audit_table, coverage, render_html
from backup_pipelines.config import BackupConfig, ConfigError, expand_env
from backup_pipelines.dump import take_dump
from backup_pipelines.manifest import BackupRef, Manifest, read_manifest
from backup_pipelines.postgres import Connection, PostgresError
from backup_pipelines.records import latest_check_record
from backup_pipelines.resources import BackupSettings
from backup_pipelines.restore import archive_manifest
from backup_pipelines.restore_test import (
    RESTORE_TEST_CHECK,
    RestoreTestReport,
    run_restore_test,
)
from backup_pipelines.runbook import RUNBOOK_KEY, render_runbook, runbook_entry
from backup_pipelines.storage import S3Store
from backup_pipelines.usage import check_capacity
from backup_pipelines.usage import storage_usage as measure_storage
from backup_pipelines.verification import (
    CheckOutcome,
    check_archive,
    check_dump_complete,
    check_size_change,
    recent_sizes,
)

REF_IO_MANAGER = "backup_ref_io_manager"
RESTORE_TEST_POOL = "restore_test"
RECOVERY_RUNBOOK = AssetKey(["recovery_runbook"])
STORAGE_USAGE = AssetKey(["storage_usage"])
AUDIT_REPORT = AssetKey(["audit_report"])


def asset_key(database: str, step: str) -> AssetKey:
    return AssetKey(["postgres", database, step])


def dump_pool(database: str, config: BackupConfig) -> str:
    """One pool per database server, so the instance caps parallel dumps on each server."""
    server = config.databases[database].server
    if server is None:
        try:
            url = expand_env(config.databases[database].url, f"databases.{database}.url")
            server = Connection.from_url(database, url).server
        except (ConfigError, PostgresError):
            server = database  # the URL is only known at run time; pool by database
    return "pg_dump_" + re.sub(r"[^A-Za-z0-9_]+", "_", server).strip("_")


def check_result(outcome: CheckOutcome, key: AssetKey) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if outcome.warning_only else AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata,
    )


def backup_metadata(ref: BackupRef, manifest: Manifest) -> dict[str, object]:
    return {
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


# The checks a backup run evaluates, by step; restore_test runs on its own.
BACKUP_CHECKS = {
    "dump": ("dump_complete",),
    "verification": ("archive_checksum", "archive_contents", "size_change"),
}


def database_assets(
    database: str, partitions: PartitionsDefinition, pool: str, freshness: dt.timedelta
) -> list[AssetsDefinition]:
    dump_key, archive_key, verification_key = (
        asset_key(database, step) for step in ("dump", "archive", "verification")
    )
    group = f"postgres_{database}"

    def spec(name: str, key: AssetKey, description: str, blocking: bool = True) -> AssetCheckSpec:
        return AssetCheckSpec(
            name,
            asset=key,
            description=description,
            blocking=blocking,
            partitions_def=partitions,
        )

    @asset(
        key=dump_key,
        group_name=group,
        partitions_def=partitions,
        pool=pool,
        io_manager_key=REF_IO_MANAGER,
        kinds={"postgres"},
        description=f"pg_dump of {database}, streamed compressed into the dump store "
        "(only today's partition can be taken).",
        check_specs=[
            spec(
                "dump_complete",
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
            stores.dumps, ref, manifest, settings.client_tools(), settings.archive_key()
        )
        yield check_result(outcome, dump_key)

    @asset(
        key=archive_key,
        group_name=group,
        partitions_def=partitions,
        io_manager_key=REF_IO_MANAGER,
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
        if isinstance(stores.archive, S3Store):
            metadata["storage_class"] = stores.archive.storage_class(ref.object_key)
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
                "archive_checksum",
                verification_key,
                "The archive's SHA-256 and size, recomputed from storage, match the dump's.",
            ),
            spec(
                "archive_contents",
                verification_key,
                "pg_restore reads the archive and every relation with rows has its data.",
            ),
            spec(
                "size_change",
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
            stores.archive, archive, manifest, settings.client_tools(), settings.archive_key()
        )
        history = recent_sizes(
            stores.archive, database, archive.partition, config.verification.size_history
        )
        outcomes.append(
            check_size_change(manifest.size_bytes, history, config.verification.size_change_warn)
        )
        return MaterializeResult(
            metadata={
                "uri": MetadataValue.path(archive.uri),
                "verified_sha256": archive.sha256,
                "size_bytes": manifest.size_bytes,
                "checks_passed": sum(outcome.passed for outcome in outcomes),
                "checks_failed": [o.name for o in outcomes if not o.passed],
            },
            check_results=[check_result(outcome, verification_key) for outcome in outcomes],
        )

    return [dump, archive, verification]


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
    verification_key = asset_key(database, "verification")

    @asset_check(
        asset=verification_key,
        name=RESTORE_TEST_CHECK,
        partitions_def=partitions,
        pool=RESTORE_TEST_POOL,
        description="The archive restores into a throw-away database on the scratch server, "
        "which then holds every table with the snapshot's row count, every constraint valid, "
        "sequences in step and the configured assertions true. Metadata: restore duration (RTO).",
    )
    def restore_test(
        context: AssetCheckExecutionContext, settings: BackupSettings
    ) -> AssetCheckResult:
        report = restore_test_report(settings, database, context.partition_key)
        return check_result(report.outcome(), verification_key)

    return restore_test


def recovery_runbook_asset(databases: list[str]) -> AssetsDefinition:
    @asset(
        key=RECOVERY_RUNBOOK,
        group_name="recovery",
        deps=[asset_key(database, "verification") for database in databases],
        kinds={"html"},
        description="A self-contained HTML page next to the archives: per database the newest "
        "verified archive, its restore test, and how to restore it when this service is down.",
    )
    def recovery_runbook(
        context: AssetExecutionContext, settings: BackupSettings
    ) -> MaterializeResult:
        archive = settings.stores().archive

        def lookup(database: str, day: str, check: str) -> object:
            return latest_check_record(
                context.instance, asset_key(database, "verification"), check, day
            )

        entries = [runbook_entry(archive, database, lookup) for database in databases]
        page = render_runbook(entries, generated_at=dt.datetime.now(dt.UTC))
        archive.write_bytes(RUNBOOK_KEY, page.encode())
        return MaterializeResult(
            metadata={
                "uri": MetadataValue.path(archive.uri(RUNBOOK_KEY)),
                "databases_with_verified_archive": sum(e.manifest is not None for e in entries),
                "databases_without_verified_archive": [
                    e.database for e in entries if e.manifest is None
                ],
                "restore_tested": [
                    e.database for e in entries if e.restore_test and e.restore_test.passed
                ],
            }
        )

    return recovery_runbook


def storage_usage_asset(
    databases: list[str], buckets: list[str], capacity_gb: float | None
) -> AssetsDefinition:
    capacity_check = AssetCheckSpec(
        "storage_capacity",
        asset=STORAGE_USAGE,
        description="The backups use at most 80% of storage.capacity_gb.",
    )

    @asset(
        key=STORAGE_USAGE,
        group_name="storage",
        check_specs=[capacity_check] if capacity_gb else [],
        description="Bytes and objects of every database's dumps, archives and references; "
        "its metadata plots use over time.",
    )
    def storage_usage(settings: BackupSettings) -> MaterializeResult:
        usage = measure_storage(settings.stores(), databases, buckets)
        total_bytes = sum(u.bytes for u in usage.values())
        metadata: dict[str, object] = {
            "total_bytes": total_bytes,
            "total_objects": sum(u.objects for u in usage.values()),
        }
        for database, used in usage.items():
            metadata[f"{database}_bytes"] = used.bytes
            metadata[f"{database}_objects"] = used.objects
        checks = [check_capacity(total_bytes, capacity_gb)] if capacity_gb else []
        return MaterializeResult(
            metadata=metadata,
            check_results=[check_result(outcome, STORAGE_USAGE) for outcome in checks],
        )

    return storage_usage


def audit_report_asset(databases: list[str]) -> AssetsDefinition:
    @asset(
        key=AUDIT_REPORT,
        group_name="recovery",
        deps=[asset_key(database, "verification") for database in databases],
        kinds={"pandas", "html"},
        description="Per database and day over the last audit.days: backup, archive, every "
        "check, restore test and retention decision, as CSV and HTML next to the archives.",
    )
    def audit_report(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        config, archive = settings.config(), settings.stores().archive
        last = dt.datetime.now(dt.UTC).date()
        first = max(config.start_date, last - dt.timedelta(days=config.audit.days - 1))
        table = audit_table(context.instance, databases, first, last)
        summary = coverage(table)
        period = f"{first} to {last}"
        archive.write_bytes(AUDIT_CSV_KEY, table.to_csv(index=False).encode())
        archive.write_bytes(AUDIT_HTML_KEY, render_html(table, summary, period).encode())
        return MaterializeResult(
            metadata={
                **summary,
                "period": period,
                "rows": len(table),
                "csv": MetadataValue.path(archive.uri(AUDIT_CSV_KEY)),
                "html": MetadataValue.path(archive.uri(AUDIT_HTML_KEY)),
                "newest_rows": MetadataValue.text(table.tail(10).to_string(index=False)),
            }
        )

    return audit_report
