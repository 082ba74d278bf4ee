"""Per database: postgres/<db>/exports, one dynamic partition per export (its id), made by job
export_data with the request as run config, with the check export_verified. Where an export
is taken and read back: core/postgres/export.py."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSelection,
    Config,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.postgres.export import (
    ExportError,
    ExportLimits,
    take_export,
    verify_export,
)
from backup_pipelines.core.postgres.export_request import ExportRequest, ExportRequestError
from backup_pipelines.dagster_private import AssetJob
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, per_day_check_spec, readable
from backup_pipelines.storage import StorageError

export_partitions = DynamicPartitionsDefinition(name=names.EXPORTS_PARTITIONS)
_WHO_ASKED = ("backup_pipelines/triggered_by", "dagster/user")


class ExportTableConfig(Config):
    table: str = Field(description="schema.table (or a table on the search path)")
    where: str | None = Field(
        default=None, description="Rows to export, e.g. project_id = :project (params bound)"
    )


class ExportQueryConfig(Config):
    name: str = Field(description="The file's name in the ZIP: queries/<name>.csv")
    sql: str = Field(description="One read-only statement; :name placeholders from params")


class ExportParamConfig(Config):
    type: str = Field(description="int, text, numeric, bool, date, timestamptz or uuid")
    value: str


class ExportRequestConfig(Config):
    """What to export (see README, 'Data exports'); the partition is the export's id."""

    tables: list[ExportTableConfig] = Field(default_factory=list)
    queries: list[ExportQueryConfig] = Field(default_factory=list)
    params: dict[str, ExportParamConfig] = Field(default_factory=dict)
    follow_parents: bool = Field(
        default=False, description="Add the rows the exported rows reference (foreign keys)."
    )
    format: str = Field(default="csv", description="csv or parquet")
    requested_by: str = Field(default="", description="Who asked (default: who launched)")
    reason: str = Field(default="", description="Why (kept in the manifest and the audit)")


def exports_asset(database: str) -> AssetsDefinition:
    key = names.database_key(database, names.EXPORTS)

    @asset(
        key=key,
        group_name=names.EXPORTS_GROUP,
        partitions_def=export_partitions,
        kinds={"zip"},
        description=f"Data exports of {database!r} on request: the rows asked for, from one "
        "snapshot, in a ZIP with schema.sql and a manifest (partition: the export's id).",
        check_specs=[
            per_day_check_spec(
                names.EXPORT_VERIFIED,
                key,
                export_partitions,
                "The stored ZIP reads back: every file of the manifest with its row count and "
                "SHA-256.",
            )
        ],
    )
    def export(
        context: AssetExecutionContext, config: ExportRequestConfig, settings: BackupSettings
    ) -> MaterializeResult:
        tags = context.run.tags
        asked_by = next((tags[t] for t in _WHO_ASKED if tags.get(t)), "unknown")
        request_fields = config.model_dump()
        request_fields["requested_by"] = config.requested_by or asked_by
        exports = settings.config().exports
        store = settings.stores().dumps
        try:
            request = ExportRequest.model_validate({"database": database, **request_fields})
            manifest = take_export(
                settings.database(database).connection,
                store,
                request,
                context.partition_key,
                ExportLimits(exports.max_rows, exports.max_bytes),
                settings.config().pg_bin_dir,
            )
        except (ExportRequestError, ExportError, PostgresError, StorageError) as error:
            raise Failure(str(error)) from None
        except ValueError as error:  # the request's own validation (pydantic)
            raise Failure(f"export of {database!r}: {error}") from None
        problems = verify_export(store, manifest)
        outcome = CheckOutcome(
            names.EXPORT_VERIFIED,
            not problems,
            f"read back {len(manifest.files)} files: every row count and checksum matches the "
            "manifest"
            if not problems
            else "; ".join(problems[:20]),
            {"problems": problems[:50]},
        )
        return MaterializeResult(
            metadata=readable(
                {
                    "uri": MetadataValue.path(store.uri(manifest.object_key)),
                    "requested_by": manifest.requested_by,
                    "reason": manifest.reason,
                    "snapshot_taken_at": manifest.snapshot_taken_at,
                    "rows": manifest.rows,
                    "files": [f"{f['name']}  {f['rows']} rows" for f in manifest.files],
                    "size_bytes": sum(f["size_bytes"] for f in manifest.files),
                }
            ),
            check_results=[check_result(outcome, key)],
        )

    return export


def export_job(exports: list[AssetsDefinition]) -> AssetJob:
    return define_asset_job(
        names.EXPORT_JOB,
        selection=AssetSelection.assets(*exports),
        partitions_def=export_partitions,
        description="Export the rows a request names from one database, into a verified ZIP "
        "(select one database's exports asset; the partition is the new export's id).",
    )
