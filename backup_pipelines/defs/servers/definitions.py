"""Point-in-time recovery, per server: base_backup, globals, wal_archive, pitr_restore_test;
the server_backup, observe_wal_archive, pitr_restore_test and restore_server jobs; their
schedules and the after-full-backup sensor."""

from dagster import Definitions

from backup_pipelines import names
from backup_pipelines.defs.project import Project
from backup_pipelines.defs.servers.assets import base_backup_asset, globals_asset, wal_archive_asset
from backup_pipelines.defs.servers.jobs import (
    pitr_restore_test_job,
    prune_server_backups_job,
    restore_server_job,
    server_backup_job,
    wal_archive_job,
)
from backup_pipelines.defs.servers.restore_points import create_restore_point_job
from backup_pipelines.defs.servers.restore_tests import pitr_restore_test_asset
from backup_pipelines.defs.servers.schedules import (
    new_full_backup_sensor,
    server_retention_schedule,
    server_schedules,
    wal_archive_schedule,
)


def servers_definitions(project: Project) -> Definitions:
    servers = project.config.servers
    if not servers:
        return Definitions()
    names_ = list(servers)
    with_repo2 = [name for name, server in servers.items() if server.pgbackrest.repo2]
    backup_job = server_backup_job(names_, with_repo2)
    test_job = pitr_restore_test_job(names_, with_repo2)
    archive_job = wal_archive_job(names_, with_repo2)
    second = names.SECOND_REPOSITORY
    return Definitions(
        assets=[
            *(
                asset_def
                for server in names_
                for asset_def in (
                    base_backup_asset(server, project.partitions),
                    globals_asset(server, project.partitions),
                    wal_archive_asset(server),
                    pitr_restore_test_asset(server, project.partitions),
                )
            ),
            *(
                asset_def
                for server in with_repo2
                for asset_def in (
                    base_backup_asset(server, project.partitions, second),
                    wal_archive_asset(server, second),
                    pitr_restore_test_asset(server, project.partitions, second),
                )
            ),
        ],
        jobs=[
            backup_job,
            archive_job,
            test_job,
            restore_server_job,
            create_restore_point_job,
            prune_server_backups_job,
        ],
        schedules=[
            *(
                schedule
                for server, settings in servers.items()
                for schedule in server_schedules(server, settings, backup_job, test_job)
            ),
            wal_archive_schedule(archive_job),
            server_retention_schedule(prune_server_backups_job),
        ],
        sensors=[new_full_backup_sensor(servers, test_job)],
    )
