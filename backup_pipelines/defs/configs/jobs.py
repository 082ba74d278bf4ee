"""The configuration jobs: `backup_configs` snapshots every source for a day; `restore_config`
writes a version into a folder (over the live files only when told so)."""

from pathlib import Path

from dagster import (
    AssetSelection,
    Config,
    Failure,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.common.encryption import EncryptionError
from backup_pipelines.core.configs.snapshots import (
    ConfigSnapshotError,
    config_days,
    read_config_manifest,
    restore_config,
)
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import require_configured

config_backup_job = define_asset_job(
    names.CONFIG_BACKUP_JOB,
    selection=AssetSelection.key_prefixes([names.CONFIG_PREFIX]),
    description="Snapshot and read back every configuration source for one day.",
)


class RestoreConfigRequest(Config):
    name: str = Field(description="The configuration source (config/<name>) to restore.")
    partition: str | None = Field(default=None, description="Day; default: the newest version.")
    target_dir: str = Field(
        description="Folder to write the version into, each file at its original path below "
        "it (e.g. /srv/restored/etc/postgresql/15/main/postgresql.conf)."
    )
    overwrite: bool = Field(
        default=False,
        description="Replace files that exist there. With target_dir '/', this writes over the "
        "live configuration: set it only when that is what you mean.",
    )


@op(description="Write a configuration version into a folder, checking every file's checksum.")
def restore_config_version(
    context: OpExecutionContext, config: RestoreConfigRequest, settings: BackupSettings
) -> None:
    sources = settings.config().config_sources()
    require_configured(names.RESTORE_CONFIG_JOB, "configuration source", config.name, sources)
    store = settings.stores().archive
    days = config_days(store, config.name)
    day = config.partition or (days[-1] if days else "")
    manifest = read_config_manifest(store, config.name, day) if day else None
    if manifest is None:
        raise Failure(
            f"{names.RESTORE_CONFIG_JOB}: config {config.name!r} has no version for "
            f"{day or 'any day'}; versions: {', '.join(days[-10:]) or 'none'}"
        )
    try:
        written = restore_config(
            store,
            manifest,
            settings.archive_key(),
            Path(config.target_dir),
            overwrite=config.overwrite,
        )
    except (ConfigSnapshotError, EncryptionError) as error:
        raise Failure(str(error)) from None
    context.log.info(
        f"restored {len(written)} files of config {config.name} ({day}, taken "
        f"{manifest.taken_at}) under {config.target_dir}, each matching its checksum"
    )


@job(
    name=names.RESTORE_CONFIG_JOB,
    description="Restore a configuration version into a folder (never over files that exist "
    "unless overwrite is set).",
)
def restore_config_job() -> None:
    restore_config_version()
