"""The first runs of a fresh deployment, as the demo (and the browser tests) make them."""

import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dagster import DagsterRunStatus

from backup_pipelines import names
from backup_pipelines.core.common.config import ServerConfig, load_config
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


def first_runs(deployment: Deployment, config: Path, submitted_by: str) -> int:
    """Back up today, restore-test what was backed up (and, with a replica, copy it there and
    drill a restore from it), write the runbook: each a run submitted to the deployment (or,
    for the restore tests and the copies, launched by their sensors), waited for."""
    today = utc_today()
    settings = load_config(config)
    by_sensor = settings.restore_test.test_each_new_archive
    wait_until_serving(deployment, names.DAILY_BACKUP_JOB, timeout_seconds=300)
    # The sensors act on archives verified after their first evaluation.
    if by_sensor:
        _wait("the new-archive sensor's first evaluation", lambda: _sensor_ready(deployment))
    if settings.replica:
        _wait(
            "the replica sensor's first evaluation",
            lambda: sensor_has_ticked(
                deployment, names.REPLICATE_JOB, names.NEW_ARCHIVE_REPLICA_SENSOR
            ),
        )
    print(f"backing up every sample database for {today} (UTC)")
    if not _succeeded(
        deployment, submit_job(deployment, names.DAILY_BACKUP_JOB, submitted_by, today)
    ):
        return _failed("the backup")
    if by_sensor:
        print(f"restore-testing every archive ({names.NEW_ARCHIVE_RESTORE_TEST_SENSOR})")
        tests = _wait(
            "the restore tests", lambda: _finished_runs(deployment, names.RESTORE_TEST_JOB, today)
        )
        passed = all(status == DagsterRunStatus.SUCCESS for status in tests.values())
    else:
        print("restore-testing every archive")
        run_id = submit_job(deployment, names.RESTORE_TEST_JOB, submitted_by, today)
        passed = _succeeded(deployment, run_id)
    if not passed:
        return _failed("a restore test")
    if settings.replica and not _replicas_proven(deployment, submitted_by, today):
        return _failed("a copy in the replica store or the failover drill")
    if settings.servers and not _servers_proven(deployment, settings.servers, submitted_by, today):
        return _failed("a server's base backup or PITR restore test")
    print("writing the recovery runbook")
    if not _succeeded(deployment, submit_job(deployment, names.RUNBOOK_JOB, submitted_by)):
        return _failed("the runbook")
    return 0


def _replicas_proven(deployment: Deployment, submitted_by: str, today: str) -> bool:
    """Every archive copied to the replica store (by its sensor) and proved there, then the
    failover drill: each restored from the replica alone."""
    print(f"copying every archive to the replica store ({names.NEW_ARCHIVE_REPLICA_SENSOR})")
    copies = _wait(
        "the copies in the replica store",
        lambda: _finished_runs(deployment, names.REPLICATE_JOB, today),
    )
    if not all(status == DagsterRunStatus.SUCCESS for status in copies.values()):
        return False
    print("drilling a failover: restoring every database from the replica store alone")
    return _succeeded(
        deployment, submit_job(deployment, names.FAILOVER_DRILL_JOB, submitted_by, today)
    )


def _servers_proven(
    deployment: Deployment, servers: dict[str, ServerConfig], submitted_by: str, today: str
) -> bool:
    """Each server's base backup, then its PITR restore test (the after-full-backup sensor's,
    or submitted here), a restore point, then a look at its WAL archive: the group shows a
    recovery window."""
    by_sensor = all(server.restore_test.after_full_backup for server in servers.values())
    if by_sensor:
        _wait(
            "the PITR sensor's first evaluation",
            lambda: sensor_has_ticked(
                deployment, names.PITR_RESTORE_TEST_JOB, names.NEW_FULL_BACKUP_PITR_TEST_SENSOR
            ),
        )
    print(f"taking a base backup of {', '.join(servers)} with pgBackRest")
    if not _succeeded(
        deployment, submit_job(deployment, names.SERVER_BACKUP_JOB, submitted_by, today)
    ):
        return False
    if by_sensor:
        print(f"proving a point-in-time restore ({names.NEW_FULL_BACKUP_PITR_TEST_SENSOR})")
        tests = _wait(
            "the PITR restore tests",
            lambda: _finished_runs(deployment, names.PITR_RESTORE_TEST_JOB, today),
        )
        proven = all(status == DagsterRunStatus.SUCCESS for status in tests.values())
    else:
        print("proving a point-in-time restore")
        run_id = submit_job(deployment, names.PITR_RESTORE_TEST_JOB, submitted_by, today)
        proven = _succeeded(deployment, run_id)
    if not proven or not all(
        _succeeded(deployment, run_id)
        for run_id in _restore_points(deployment, servers, submitted_by)
    ):
        return False
    return _succeeded(deployment, submit_job(deployment, names.WAL_ARCHIVE_JOB, submitted_by))


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


def _sensor_ready(deployment: Deployment) -> bool:
    return sensor_has_ticked(
        deployment, names.RESTORE_TEST_JOB, names.NEW_ARCHIVE_RESTORE_TEST_SENSOR
    )


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


def _succeeded(deployment: Deployment, run_id: str) -> bool:
    return wait_for_run(deployment, run_id, RUN_TIMEOUT) == DagsterRunStatus.SUCCESS


def _failed(what: str) -> int:
    print(f"{what} failed; see the run in the UI (Runs page)", file=sys.stderr)
    return 1
