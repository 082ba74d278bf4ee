"""The first runs of a fresh deployment, as the demo (and the browser tests) make them."""

import datetime as dt
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from dagster import DagsterRunStatus

from backup_pipelines import names
from backup_pipelines.core.common.config import BackupConfig, ServerConfig, load_config
from backup_pipelines.core.postgres.dump import utc_today
from backup_pipelines.trigger.remote import (
    FINISHED,
    Deployment,
    RemoteError,
    runs_of,
    sensor_has_ticked,
    submit_job,
    submit_restore_point,
    wait_for_run,
    wait_until_serving,
)

RUN_TIMEOUT = 1800.0
T = TypeVar("T")


class _Failed(Exception):
    """A first run that did not succeed: what it was."""


def first_runs(
    deployment: Deployment,
    config: Path,
    submitted_by: str,
    change_a_setting: Callable[[], str] | None = None,
) -> int:
    """Back up today, restore-test what was backed up (and, with a replica, copy it there and
    drill a restore from it), snapshot the configuration, write the runbook: each a run
    submitted to the deployment (or, for the restore tests and the copies, launched by their
    sensors), waited for. The databases' chain and the servers' run side by side, as in a
    deployment's night. `change_a_setting` (it says what it changed) is called between two
    configuration snapshots, so the second shows a diff."""
    try:
        _all_first_runs(
            deployment, load_config(config), submitted_by, utc_today(), change_a_setting
        )
    except _Failed as failed:
        print(f"{failed} failed; see the run in the UI (Runs page)", file=sys.stderr)
        return 1
    return 0


def _all_first_runs(
    deployment: Deployment,
    settings: BackupConfig,
    submitted_by: str,
    today: str,
    change_a_setting: Callable[[], str] | None,
) -> None:
    wait_until_serving(deployment, names.DAILY_BACKUP_JOB, timeout_seconds=300)
    _wait_for_sensors(deployment, settings)
    print(f"backing up every sample database for {today} (UTC)")
    backup = submit_job(deployment, names.DAILY_BACKUP_JOB, submitted_by, today)
    server_backup = None
    if settings.servers:
        print(f"taking a base backup of {', '.join(settings.servers)} with pgBackRest")
        server_backup = submit_job(deployment, names.SERVER_BACKUP_JOB, submitted_by, today)
    configs = None
    if settings.config_sources():
        print(f"snapshotting the configuration: {', '.join(settings.config_sources())}")
        configs = submit_job(deployment, names.CONFIG_BACKUP_JOB, submitted_by, today)
    _require(deployment, backup, "the backup")
    _restore_test(deployment, settings, submitted_by, today)
    drill = _replicate(deployment, submitted_by, today) if settings.replica else None
    if server_backup:
        _require(deployment, server_backup, "a server's base backup")
        _prove_servers(deployment, settings.servers, submitted_by, today)
    if drill:
        _require(deployment, drill, "the failover drill")
    if configs:
        _require(deployment, configs, "the configuration snapshot")
        if change_a_setting:
            print(f"{change_a_setting()}; snapshotting the configuration again (see its diff)")
            again = submit_job(deployment, names.CONFIG_BACKUP_JOB, submitted_by, today)
            _require(deployment, again, "the second configuration snapshot")
    print("writing the recovery runbook")
    _require(deployment, submit_job(deployment, names.RUNBOOK_JOB, submitted_by), "the runbook")


def _wait_for_sensors(deployment: Deployment, settings: BackupConfig) -> None:
    """The sensors act on what is made after their first evaluation."""
    watched = []
    if settings.restore_test.test_each_new_archive:
        watched.append((names.RESTORE_TEST_JOB, names.NEW_ARCHIVE_RESTORE_TEST_SENSOR))
    if settings.replica:
        watched.append((names.REPLICATE_JOB, names.NEW_ARCHIVE_REPLICA_SENSOR))
    if settings.servers and _pitr_by_sensor(settings.servers):
        watched.append((names.PITR_RESTORE_TEST_JOB, names.NEW_FULL_BACKUP_PITR_TEST_SENSOR))
    for job, sensor in watched:
        _wait(f"{sensor}'s first evaluation", partial(sensor_has_ticked, deployment, job, sensor))


def _pitr_by_sensor(servers: dict[str, ServerConfig]) -> bool:
    return all(server.restore_test.after_full_backup for server in servers.values())


def _restore_test(
    deployment: Deployment, settings: BackupConfig, submitted_by: str, today: str
) -> None:
    if settings.restore_test.test_each_new_archive:
        print(f"restore-testing every archive ({names.NEW_ARCHIVE_RESTORE_TEST_SENSOR})")
        _require_all(deployment, names.RESTORE_TEST_JOB, today, "a restore test")
    else:
        print("restore-testing every archive")
        run_id = submit_job(deployment, names.RESTORE_TEST_JOB, submitted_by, today)
        _require(deployment, run_id, "a restore test")


def _replicate(deployment: Deployment, submitted_by: str, today: str) -> str:
    """Every archive copied to the replica store (by its sensor) and proved there; then the
    failover drill (each database restored from the replica alone) is submitted: its run id."""
    print(f"copying every archive to the replica store ({names.NEW_ARCHIVE_REPLICA_SENSOR})")
    _require_all(deployment, names.REPLICATE_JOB, today, "a copy in the replica store")
    print("drilling a failover: restoring every database from the replica store alone")
    return submit_job(deployment, names.FAILOVER_DRILL_JOB, submitted_by, today)


def _prove_servers(
    deployment: Deployment, servers: dict[str, ServerConfig], submitted_by: str, today: str
) -> None:
    """After the base backups: each server's PITR restore test (the after-full-backup
    sensor's, or submitted here), a restore point, then a look at its WAL archive: the group
    shows a recovery window."""
    what = "a server's PITR restore test"
    if _pitr_by_sensor(servers):
        print(f"proving a point-in-time restore ({names.NEW_FULL_BACKUP_PITR_TEST_SENSOR})")
        _require_all(deployment, names.PITR_RESTORE_TEST_JOB, today, what)
    else:
        print("proving a point-in-time restore")
        run_id = submit_job(deployment, names.PITR_RESTORE_TEST_JOB, submitted_by, today)
        _require(deployment, run_id, what)
    for run_id in _restore_points(deployment, servers, submitted_by):
        _require(deployment, run_id, "a restore point")
    run_id = submit_job(deployment, names.WAL_ARCHIVE_JOB, submitted_by)
    _require(deployment, run_id, "the WAL archive's observation")


def _restore_points(
    deployment: Deployment, servers: dict[str, ServerConfig], submitted_by: str
) -> list[str]:
    """A named restore point on each server, as a deployment pipeline makes one before a
    migration: the runbook's timeline then offers it."""
    name = f"first-runs-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    print(f"marking restore point {name} on {', '.join(servers)}")
    note = "made by the first runs, as a pipeline would before a migration"
    return [
        submit_restore_point(deployment, server, name, note, submitted_by) for server in servers
    ]


def _require_all(deployment: Deployment, job: str, day: str, what: str) -> None:
    """Wait for the runs of `job` for `day` a sensor launched; each must succeed."""
    runs = _wait(f"the runs of {job}", lambda: _finished_runs(deployment, job, day))
    if not all(status == DagsterRunStatus.SUCCESS for status in runs.values()):
        raise _Failed(what)


def _finished_runs(
    deployment: Deployment, job: str, day: str
) -> dict[str, DagsterRunStatus] | None:
    runs = runs_of(deployment, job, day)
    return runs if runs and set(runs.values()) <= FINISHED else None


def _wait(what: str, done: Callable[[], T | None], timeout: float = 300.0) -> T:
    deadline = time.monotonic() + timeout
    while not (result := done()):
        if time.monotonic() > deadline:
            raise RemoteError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(2)
    return result


def _require(deployment: Deployment, run_id: str, what: str) -> None:
    if wait_for_run(deployment, run_id, RUN_TIMEOUT) != DagsterRunStatus.SUCCESS:
        raise _Failed(what)
