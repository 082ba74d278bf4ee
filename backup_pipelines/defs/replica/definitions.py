"""The second copy (replica:): per database postgres/<db>/replica and
postgres/<db>/replica_restore_test, the replicate job and its new-archive sensor, the failover
drill and its monthly schedule. Nothing when no replica is configured."""

from dagster import Definitions

from backup_pipelines import names
from backup_pipelines.defs.postgres.restore_tests import restore_test_asset
from backup_pipelines.defs.postgres.schedules import newest_verified_schedule
from backup_pipelines.defs.postgres.sensors import new_verification_sensor
from backup_pipelines.defs.project import Project
from backup_pipelines.defs.replica.assets import replica_asset
from backup_pipelines.defs.replica.jobs import failover_drill_job, replicate_job


def replica_definitions(project: Project) -> Definitions:
    replica = project.config.replica
    if replica is None:
        return Definitions()
    databases, partitions = project.databases, project.partitions
    replicas = [replica_asset(db, partitions, replica.kind) for db in databases]
    drills = [restore_test_asset(db, partitions, from_replica=True) for db in databases]
    replicate, drill = replicate_job(replicas), failover_drill_job(drills)
    return Definitions(
        assets=[*replicas, *drills],
        jobs=[replicate, drill],
        schedules=[
            newest_verified_schedule(
                names.FAILOVER_DRILL_SCHEDULE,
                drill,
                databases,
                replica.drill_schedule,
                "The failover drill: restore-tests every database's newest replica from the "
                "replica store alone",
                tested=(names.REPLICA, names.REPLICA_RESTORE_TEST),
            )
        ],
        sensors=[
            new_verification_sensor(
                names.NEW_ARCHIVE_REPLICA_SENSOR,
                "Requests a copy of each newly verified archive in the replica store.",
                databases,
                replicate,
                names.REPLICA,
                enabled=True,
                # A copy is cheap to request and the sooner it exists the smaller the loss
                # when the primary store goes.
                interval_seconds=30,
            )
        ],
    )
