"""Every name this project shows in Dagster, defined once: asset keys and groups, check names,
jobs, schedules, sensors, pools and resource keys. Everything else imports them from here, so
a rename is one edit (and one diff in the definitions snapshot test).

Plain strings, so the Dagster-free backup logic in core/ can name its check outcomes too; the
asset-key helpers import Dagster only when called.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import AssetKey

# --- assets -----------------------------------------------------------------------------------
DATABASE_PREFIX = "postgres"  # postgres/<db>/<step>
BUCKET_PREFIX = "s3"  # s3/<bucket>/<step>
DUMP = "dump"
ARCHIVE = "archive"
VERIFICATION = "verification"
RESTORE_TEST = "restore_test"
SNAPSHOT = "snapshot"
REPLICA = "replica"  # the second copy of the day's archive, in the replica store
REPLICA_RESTORE_TEST = "replica_restore_test"  # the failover drill: restored from the replica
REPLICA_STEPS = (REPLICA, REPLICA_RESTORE_TEST)  # never part of a backup run
EXPORTS = "exports"  # postgres/<db>/exports: data exports on request, one partition each
EXPORTS_PARTITIONS = "exports"  # the dynamic partitions: one per export id
EXPORTS_GROUP = "exports"
BACKUP_STEPS = (DUMP, ARCHIVE, VERIFICATION)  # what a backup run materializes
DATABASE_STEPS = (*BACKUP_STEPS, RESTORE_TEST)  # the lineage of one database
BUCKET_STEPS = (SNAPSHOT, VERIFICATION)
RECOVERY_RUNBOOK = "recovery_runbook"
STORAGE_USAGE = "storage_usage"
AUDIT_REPORT = "audit_report"
RECOVERY_OBJECTIVES = "recovery_objectives"  # promised vs achieved RPO and RTO
RPO_MET = "rpo_met"
RTO_MET = "rto_met"
OBJECTIVE_CHECKS = {"rpo": RPO_MET, "rto": RTO_MET}  # objective -> its check
CONFIG_PREFIX = "config"  # config/<source>: a configuration's daily snapshot
CONFIGS_GROUP = "configs"
RECOVERY_GROUP = "recovery"
STORAGE_GROUP = "storage"


def key(*path: str) -> AssetKey:
    from dagster import AssetKey  # here, not at the top: core/ imports this module

    return AssetKey(list(path))


def database_key(database: str, step: str) -> AssetKey:
    return key(DATABASE_PREFIX, database, step)


def database_backup_op(database: str) -> str:
    """The one step that takes a database's dump, archive and verification."""
    return f"{DATABASE_PREFIX}__{database}__backup"


def bucket_key(bucket: str, step: str) -> AssetKey:
    return key(BUCKET_PREFIX, bucket, step)


def config_key(source: str) -> AssetKey:
    return key(CONFIG_PREFIX, source)


def database_group(database: str) -> str:
    return f"{DATABASE_PREFIX}_{database}"


def bucket_group(bucket: str) -> str:
    return f"{BUCKET_PREFIX}_{bucket}"


# --- asset checks -----------------------------------------------------------------------------
DUMP_COMPLETE = "dump_complete"
ARCHIVE_CHECKSUM = "archive_checksum"
ARCHIVE_CONTENTS = "archive_contents"
SIZE_CHANGE = "size_change"
RESTORED_DATA_MATCHES = "restored_data_matches"
REPLICA_VERIFIED = "replica_verified"
STORAGE_CAPACITY = "storage_capacity"
SNAPSHOT_MANIFEST = "snapshot_manifest"
SNAPSHOT_OBJECTS = "snapshot_objects"
EXPORT_VERIFIED = "export_verified"
CONFIG_COMPLETE = "config_complete"
CONFIG_READBACK = "config_readback"
# A failure of these is a WARN (reported, nothing stops); of every other check an ERROR. (A
# missed recovery objective is an ERROR where its objectives say `severity: error`.)
WARNING_CHECKS = (SIZE_CHANGE, RPO_MET, RTO_MET)
# Both must pass (newest evaluation of each) for a backup or snapshot to count as verified.
VERIFYING_CHECKS = (ARCHIVE_CHECKSUM, ARCHIVE_CONTENTS)
SNAPSHOT_CHECKS = (SNAPSHOT_MANIFEST, SNAPSHOT_OBJECTS)
CONFIG_CHECKS = (CONFIG_COMPLETE, CONFIG_READBACK)  # both pass: a good configuration snapshot
# The checks a backup run evaluates, by step; the restore test runs on its own.
BACKUP_CHECKS = {
    DUMP: (DUMP_COMPLETE,),
    VERIFICATION: (*VERIFYING_CHECKS, SIZE_CHANGE),
}
DATABASE_CHECKS = {**BACKUP_CHECKS, RESTORE_TEST: (RESTORED_DATA_MATCHES,)}
REPLICA_CHECKS = {REPLICA: (REPLICA_VERIFIED,), REPLICA_RESTORE_TEST: (RESTORED_DATA_MATCHES,)}
# What proves a stored copy of a day (all must pass, newest evaluation of each): the archive
# by its verification, the copy in the replica store by its own check.
PROVING_CHECKS = {VERIFICATION: VERIFYING_CHECKS, REPLICA: REPLICA_CHECKS[REPLICA]}
# Before restore tests were an asset of their own they were this check on the verification
# asset; that history is still read (records.restore_test_history), never written.
LEGACY_RESTORE_TEST_CHECK = (VERIFICATION, "restore_test")

# --- jobs, schedules, sensors -----------------------------------------------------------------
DAILY_BACKUP_JOB = "daily_backup"
RESTORE_TEST_JOB = "restore_test"
RESTORE_DATABASE_JOB = "restore_database"
RESTORE_BUCKET_JOB = "restore_bucket"
CONFIG_BACKUP_JOB = "backup_configs"
RESTORE_CONFIG_JOB = "restore_config"
EXPORT_JOB = "export_data"
PRUNE_JOB = "prune_backups"
RUNBOOK_JOB = "refresh_recovery_runbook"
STORAGE_USAGE_JOB = "measure_storage"
AUDIT_REPORT_JOB = "write_audit_report"
REPLICATE_JOB = "replicate_archives"
FAILOVER_DRILL_JOB = "failover_drill"
OBJECTIVES_JOB = "evaluate_recovery_objectives"

DAILY_BACKUP_SCHEDULE = "daily_backup_schedule"
CONFIG_BACKUP_SCHEDULE = "daily_config_backup_schedule"
WEEKLY_RESTORE_TEST_SCHEDULE = "weekly_restore_test_schedule"
STORAGE_USAGE_SCHEDULE = "storage_usage_schedule"
AUDIT_REPORT_SCHEDULE = "daily_audit_report_schedule"
FAILOVER_DRILL_SCHEDULE = "failover_drill_schedule"
OBJECTIVES_SCHEDULE = "recovery_objectives_schedule"

NEW_ARCHIVE_RESTORE_TEST_SENSOR = "restore_test_new_archives_sensor"
NEW_ARCHIVE_REPLICA_SENSOR = "replicate_new_archives_sensor"
RUNBOOK_SENSOR = "recovery_runbook_sensor"
OBJECTIVES_SENSOR = "recovery_objectives_sensor"
RETENTION_SENSOR = "retention_sensor"
ALERTS_SENSOR = "backup_alerts_sensor"

# --- pools and resources ----------------------------------------------------------------------
RESTORE_TEST_POOL = "restore_test"
SETTINGS_RESOURCE = "settings"


def server_dump_pool(server: str) -> str:
    """The pool of one database server (`host:port` or the configured `server:`)."""
    return "pg_dump_" + re.sub(r"[^A-Za-z0-9_]+", "_", server).strip("_")


# --- servers (point-in-time recovery) ----------------------------------------------------------
SERVER_PREFIX = "pg_server"  # pg_server/<server>/<step>
BASE_BACKUP = "base_backup"
GLOBALS = "globals"
WAL_ARCHIVE = "wal_archive"
PITR_RESTORE_TEST = "pitr_restore_test"
SERVER_BACKUP_STEPS = (BASE_BACKUP, GLOBALS)  # what a server's backup run materializes


def repository_step(step: str, repo: int) -> str:
    """A step that works on one pgBackRest repository of two: base_backup is repository 1's,
    base_backup_repo2 the second's."""
    return step if repo == 1 else f"{step}_repo{repo}"


SECOND_REPOSITORY = 2
BASE_BACKUP_REPO2 = repository_step(BASE_BACKUP, SECOND_REPOSITORY)
PITR_RESTORE_TEST_REPO2 = repository_step(PITR_RESTORE_TEST, SECOND_REPOSITORY)  # its drill
WAL_ARCHIVE_REPO2 = repository_step(WAL_ARCHIVE, SECOND_REPOSITORY)
BASE_BACKUP_VERIFIED = "base_backup_verified"
WAL_CONTINUOUS = "wal_continuous"
ARCHIVE_LAG = "archive_lag_within_limit"
ARCHIVING_SUCCEEDS = "archiving_succeeds"
PITR_RESTORE_PROVEN = "pitr_restore_proven"
SERVER_CHECKS = {
    BASE_BACKUP: (BASE_BACKUP_VERIFIED, WAL_CONTINUOUS),
    WAL_ARCHIVE: (ARCHIVE_LAG, ARCHIVING_SUCCEEDS, WAL_CONTINUOUS),
    PITR_RESTORE_TEST: (PITR_RESTORE_PROVEN,),
    BASE_BACKUP_REPO2: (BASE_BACKUP_VERIFIED, WAL_CONTINUOUS),
    PITR_RESTORE_TEST_REPO2: (PITR_RESTORE_PROVEN,),
    WAL_ARCHIVE_REPO2: (ARCHIVE_LAG, WAL_CONTINUOUS),
}
SERVER_BACKUP_JOB = "server_backup"
WAL_ARCHIVE_JOB = "observe_wal_archive"
PITR_RESTORE_TEST_JOB = "pitr_restore_test"
RESTORE_SERVER_JOB = "restore_server"
CREATE_RESTORE_POINT_JOB = "create_restore_point"
RESTORE_POINT_OP = "make_restore_point"  # its one op, named in the run config the CLI sends
RESTORE_POINT_EVENT = "restore_point"  # the event a made restore point is recorded as
PRUNE_SERVERS_JOB = "prune_server_backups"
WAL_ARCHIVE_SCHEDULE = "wal_archive_schedule"
SERVER_RETENTION_SCHEDULE = "server_retention_schedule"
NEW_FULL_BACKUP_PITR_TEST_SENSOR = "pitr_restore_test_new_full_backup_sensor"
BASE_BACKUP_POOL = "pgbackrest"  # one pgBackRest backup or restore test at a time, per deployment


def server_key(server: str, step: str) -> AssetKey:
    return key(SERVER_PREFIX, server, step)


def server_group(server: str) -> str:
    return f"{SERVER_PREFIX}_{server}"


def server_backup_schedule(server: str) -> str:
    return f"{server}_base_backup_schedule"  # each server's own backup_schedule cron


def pitr_restore_test_schedule(server: str) -> str:
    return f"{server}_pitr_restore_test_schedule"


def repo2_backup_schedule(server: str) -> str:
    return f"{server}_repo2_base_backup_schedule"


def repo2_drill_schedule(server: str) -> str:
    return f"{server}_repo2_pitr_drill_schedule"
