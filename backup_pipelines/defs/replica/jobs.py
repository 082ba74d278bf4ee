"""The replica's jobs: `replicate_archives` copies a day's verified archives to the replica
store; `failover_drill` restore-tests them from there alone."""

from dagster import AssetsDefinition, AssetSelection, define_asset_job

from backup_pipelines import names
from backup_pipelines.dagster_private import AssetJob


def replicate_job(replicas: list[AssetsDefinition]) -> AssetJob:
    return define_asset_job(
        names.REPLICATE_JOB,
        selection=AssetSelection.assets(*replicas),
        description="Copy each selected database's verified archive of the day to the replica "
        "store and prove the copy there (postgres/<db>/replica).",
    )


def failover_drill_job(drills: list[AssetsDefinition]) -> AssetJob:
    return define_asset_job(
        names.FAILOVER_DRILL_JOB,
        selection=AssetSelection.assets(*drills),
        description="The failover drill: restore each selected database's copy of the day from "
        "the replica store alone into a throw-away database and prove it "
        "(postgres/<db>/replica_restore_test).",
    )
