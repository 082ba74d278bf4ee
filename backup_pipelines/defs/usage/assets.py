"""What the backups take up in storage, measured hourly, with a capacity check."""

from dagster import AssetsDefinition, MaterializeResult, asset

from backup_pipelines import names
from backup_pipelines.core.retention.usage import check_capacity
from backup_pipelines.core.retention.usage import storage_usage as measure_storage
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, check_spec, readable


def storage_usage_asset(
    databases: list[str], buckets: list[str], capacity_gb: float | None
) -> AssetsDefinition:
    capacity_check = check_spec(
        names.STORAGE_CAPACITY,
        names.STORAGE_USAGE,
        "The backups use at most 80% of storage.capacity_gb.",
    )

    @asset(
        key=names.STORAGE_USAGE,
        group_name=names.STORAGE_GROUP,
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
            metadata=readable(metadata),
            check_results=[
                check_result(outcome, names.key(names.STORAGE_USAGE)) for outcome in checks
            ],
        )

    return storage_usage
