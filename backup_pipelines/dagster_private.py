"""Every import of Dagster's private modules (`dagster._…`), in one place, each with the reason
no public API serves (checked against Dagster 1.13). fast/test_dagster_private.py fails when one
of them changes shape, before a backup or a report would."""

from __future__ import annotations

# define_asset_job's return type: Dagster exports the function but not the type, and the jobs
# are passed to schedules and sensors under that type.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition as AssetJob,
)

# Check history per daily partition and by status: the event log's check-history query takes
# these, and no public API reads a check's evaluations per partition.
from dagster._core.event_api import PartitionKeyFilter

# The instance configuration's storage classes, to import them once in the forkserver before
# the step processes fork (the public DagsterInstance opens storage; it does not name modules).
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

# The cron dialect Dagster's scheduler runs: a cron string is valid, and fires on a day, exactly
# when Dagster says so (a second parser could disagree with the one that runs the schedules).
from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

# What opening an instance imports whatever its configuration, and the default instance's
# storage (found by profiling a run's step processes with py-spy): the forkserver preloads them.
INSTANCE_MODULES = (
    "dagster._core.instance.factory",
    "dagster._core.secrets.loader",
    "dagster._core.storage.sqlite_storage",
)

__all__ = [
    "INSTANCE_MODULES",
    "AssetCheckExecutionRecord",
    "AssetCheckExecutionRecordStatus",
    "AssetJob",
    "InstanceRef",
    "PartitionKeyFilter",
    "cron_string_iterator",
    "is_valid_cron_string",
]
