"""Storage accounting: what the backups take up, and the capacity check."""

from dagster import AssetKey, materialize

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines_tests.support.runs import definitions_for, failure_messages, run_backup


def measure(defs, instance):
    return materialize(
        assets=list(defs.assets or []),
        selection=[AssetKey(["storage_usage"])],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def test_usage_counts_every_object_and_capacity_fails_above_80_percent(write_config, instance):
    config = write_config(storage={"local": {"path": "./backups"}, "capacity_gb": 0.0001})
    defs = definitions_for(config)
    assert run_backup(defs, instance).success
    result = measure(defs, instance)
    assert result.success, failure_messages(result)
    metadata = {
        k: v.value
        for k, v in result.asset_materializations_for_node("storage_usage")[0].metadata.items()
    }

    stores = stores_from_config(load_config(config))
    for database in ("agentic", "langfuse"):
        objects = [
            o
            for store, prefix in (
                (stores.archive, f"{database}/"),
                (stores.dumps, f"{database}/"),
                (stores.refs, f"postgres/{database}/"),
            )
            for o in store.list_objects(prefix)
        ]
        assert (
            metadata[f"{database}_objects"] == len(objects) == 6
        )  # dump, archive, 2 manifests, 2 refs
        assert metadata[f"{database}_bytes"] == sum(o.size for o in objects) > 0
    assert metadata["total_bytes"] == metadata["agentic_bytes"] + metadata["langfuse_bytes"]

    (check,) = result.get_asset_check_evaluations()
    assert (
        check.check_name == names.STORAGE_CAPACITY and not check.passed
    )  # 100 kB is far too small
    assert "of the configured 0.0001 GB (fails above 80%)" in check.description

    defs = definitions_for(
        write_config(storage={"local": {"path": "./backups"}, "capacity_gb": 100})
    )
    (check,) = measure(defs, instance).get_asset_check_evaluations()
    assert check.passed
