"""Per configuration source: config/<name>, daily-partitioned, with its checks config_complete
and config_readback. Where a configuration is collected (core/configs/sources.py), stored,
compared and read back (core/configs/snapshots.py)."""

import datetime as dt
import tempfile
from pathlib import Path

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
from backup_pipelines.core.common.config import (
    DEFAULT_REDACTIONS,
    BackupConfig,
    ConfigError,
    server_config_source,
)
from backup_pipelines.core.common.encryption import EncryptionError
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.configs.changes import Changes, Redactor
from backup_pipelines.core.configs.snapshots import (
    ConfigSnapshotError,
    TakenSnapshot,
    completeness,
    take_config_snapshot,
    verify_config_snapshot,
)
from backup_pipelines.core.configs.sources import ConfigSourceError, collect
from backup_pipelines.core.postgres.dump import DumpError, require_day_open
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import (
    check_result,
    per_day_check_spec,
    readable,
    run_submitted_at,
)
from backup_pipelines.storage import StorageError

_DIFF_SHOWN = 400  # lines of the diff in the description; the metadata has all of it


def source_description(config: BackupConfig, name: str) -> str:
    """What a source reads, as the asset's description and the checks' messages say it."""
    source = config.configs.get(name)
    if source is None:
        server = next(s for s in config.servers if server_config_source(s) == name)
        return (
            f"server {server!r}'s PostgreSQL configuration (config_file, hba_file, ident_file, "
            "postgresql.auto.conf and every file they include)"
        )
    if source.command is not None:
        return f"the output of {' '.join(source.command.argv[:1])}"
    if source.http is not None:
        return "an HTTP export"
    return ", ".join(source.files)


def redactor_for(config: BackupConfig, name: str) -> Redactor:
    source = config.configs.get(name)
    return Redactor([*DEFAULT_REDACTIONS, *(source.redact if source else ())])


def config_asset(
    config: BackupConfig, name: str, partitions: PartitionsDefinition
) -> AssetsDefinition:
    key = names.config_key(name)
    described = source_description(config, name)

    @asset(
        key=key,
        group_name=names.CONFIGS_GROUP,
        partitions_def=partitions,
        kinds={"config"},
        description=f"Daily snapshot of {described}: one archive with a manifest of every "
        "file's size, mode, owner and SHA-256; unchanged versions are not stored again (only "
        "today's partition can be taken).",
        check_specs=[
            per_day_check_spec(
                names.CONFIG_COMPLETE,
                key,
                partitions,
                "Every configured path matched and every expected section is in the export.",
            ),
            per_day_check_spec(
                names.CONFIG_READBACK,
                key,
                partitions,
                "The stored archive reads back and decodes, holding every file of the manifest "
                "with its size and checksum.",
            ),
        ],
    )
    def snapshot(context: AssetExecutionContext, settings: BackupSettings) -> MaterializeResult:
        day = context.partition_key
        current = settings.config()
        store, key_ = settings.stores().archive, settings.archive_key()
        source = current.configs.get(name)
        try:
            require_day_open(name, day, run_submitted_at(context))
            with tempfile.TemporaryDirectory(prefix="backup-pipelines-config-") as folder:
                collection = collect(current, name, Path(folder))
                taken = take_config_snapshot(
                    store,
                    collection,
                    day,
                    dt.datetime.now(dt.UTC),
                    key=key_,
                    expect=source.expect if source else [],
                    redactor=redactor_for(current, name),
                )
        except (ConfigSourceError, ConfigSnapshotError, DumpError, ConfigError) as error:
            raise Failure(str(error)) from None
        except (EncryptionError, PostgresError, StorageError) as error:
            raise Failure(f"config {name!r}: {error}") from None
        outcomes = [
            completeness(taken.manifest, source_description(current, name)),
            verify_config_snapshot(store, taken.manifest, key_),
        ]
        return MaterializeResult(
            metadata=_metadata(taken, store.uri(taken.manifest.object_key)),
            check_results=[check_result(outcome, key) for outcome in outcomes],
        )

    return snapshot


def _metadata(taken: TakenSnapshot, uri: str) -> dict[str, object]:
    manifest, changes = taken.manifest, taken.changes
    shown: dict[str, object] = {
        "archive": MetadataValue.path(uri),
        "stored_on": manifest.stored_on,
        "unchanged": manifest.unchanged,
        "files": len(manifest.files),
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "file_list": [
            f"{f['path']}  {f['size']:,} B  {f['mode'] or '-'} {f['owner'] or '-'}:"
            f"{f['group'] or '-'}  {f['sha256'][:12]}"
            for f in manifest.files
        ],
    }
    if taken.notes:
        shown["notes"] = " ".join(taken.notes)
    if taken.previous is not None:
        shown["previous_version"] = taken.previous.taken_at
    if changes is not None:
        shown |= _changes_metadata(changes)
    return readable(shown)


def _changes_metadata(changes: Changes) -> dict[str, object]:
    summary = (
        ", ".join(
            f"{len(paths)} {what}"
            for what, paths in (
                ("added", changes.added),
                ("removed", changes.removed),
                ("changed", changes.changed),
                ("mode or owner changed", changes.attributes),
            )
            if paths
        )
        or "nothing changed"
    )
    shown: dict[str, object] = {
        "changes": summary,
        "added": changes.added,
        "removed": changes.removed,
        "changed": changes.changed,
        "mode_or_owner_changed": changes.attributes,
    }
    if changes.diff:
        lines = changes.diff.splitlines()
        shown["diff"] = MetadataValue.md("```diff\n" + "\n".join(lines[:_DIFF_SHOWN]) + "\n```")
    return shown
