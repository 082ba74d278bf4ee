"""The database backups: per database dump -> archive -> verification -> restore_test, the
daily backup, restore-test and restore jobs, their schedules and the new-archive sensor."""

import datetime as dt

from dagster import Definitions

from backup_pipelines import names
from backup_pipelines.defs.postgres.assets import database_backup, database_dump_pool
from backup_pipelines.defs.postgres.exports import export_job, exports_asset
from backup_pipelines.defs.postgres.jobs import (
    daily_backup_job,
    restore_database_job,
    restore_test_job,
)
from backup_pipelines.defs.postgres.restore_tests import restore_test_asset
from backup_pipelines.defs.postgres.schedules import (
    daily_backup_schedule,
    weekly_restore_test_schedule,
)
from backup_pipelines.defs.postgres.sensors import new_archive_restore_test_sensor
from backup_pipelines.defs.project import Project


def postgres_definitions(project: Project) -> Definitions:
    config = project.config
    freshness = dt.timedelta(hours=config.alerts.freshness_hours)
    restore_tests = [restore_test_asset(db, project.partitions) for db in project.databases]
    replica_steps = [
        names.database_key(db, step) for db in project.databases for step in names.REPLICA_STEPS
    ]
    exports = [exports_asset(db) for db in project.databases]
    backup_job = daily_backup_job(
        [*restore_tests, *exports], replica_steps if config.replica else []
    )
    test_job = restore_test_job(restore_tests)
    return Definitions(
        assets=[
            *(
                database_backup(db, project.partitions, database_dump_pool(db, config), freshness)
                for db in project.databases
            ),
            *restore_tests,
            *exports,
        ],
        jobs=[backup_job, test_job, restore_database_job, export_job(exports)],
        schedules=[
            daily_backup_schedule(backup_job, config.schedule),
            weekly_restore_test_schedule(test_job, project.databases, config.restore_test.schedule),
        ],
        sensors=[
            new_archive_restore_test_sensor(
                project.databases, test_job, config.restore_test.test_each_new_archive
            )
        ],
    )
