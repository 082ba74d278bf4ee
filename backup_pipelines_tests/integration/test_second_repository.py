"""A server's second pgBackRest repository (`pgbackrest.repo2`): WAL is pushed to both
(asynchronously); each repository gets its base backup from its own schedule; the failover
drill restores from the second alone; retention judges each; and with the first repository
deleted entirely the server is restored from the second alone, with only its settings, by the
runbook's commands to a moment and by the restore_server job to a named point: each finds
exactly the rows committed before it."""

import datetime as dt
import os
import shutil
import subprocess
import time
import uuid

import psycopg
import yaml
from dagster import build_schedule_context
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import wait_until_archived
from backup_pipelines.core.servers.pitr_test import target_time
from backup_pipelines.core.servers.restore_points import create_restore_point
from backup_pipelines.core.servers.scratch import free_port, stop_copy
from backup_pipelines.defs.alerts.health import check_problems
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_tests.support.archiving import archiving_server
from backup_pipelines_tests.support.config import PITR_PASSWORD_ENV
from backup_pipelines_tests.support.folders import shared_folder
from backup_pipelines_tests.support.runbook_html import RunbookParser
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    materialize_runbook,
)

SERVER = "main"


def write_rows(url: str, phase: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO ledger (phase) SELECT %s FROM generate_series(1, 3)", (phase,))


def phases_in(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT phase, count(*) FROM ledger GROUP BY phase").fetchall())


def run_as_scheduled(defs, instance, schedule_name: str):
    """What the schedule's tick asks for, run now."""
    schedule = defs.resolve_schedule_def(schedule_name)
    tick = schedule.evaluate_tick(
        build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime.now(dt.UTC),
            repository_def=defs.get_repository_def(),
        )
    )
    (request,) = tick.run_requests
    return defs.resolve_job_def(schedule.job_name).execute_in_process(
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        instance=instance,
        raise_on_error=False,
    )


def restore_by_hand(commands: str, moment: dt.datetime, destination, server) -> None:
    """The runbook's commands for the second repository, run as an operator would (as root,
    with pgBackRest and PostgreSQL only): the copy holds the rows written before `moment`."""
    port = free_port()
    shell_env = {
        "PATH": os.environ["PATH"],
        "TARGET_TIME": target_time(moment).value or "",
        "RESTORE_DIR": str(destination),
        "RESTORE_PORT": str(port),
    }
    done = subprocess.run(["bash", "-c", commands], env=shell_env, capture_output=True, text=True)
    try:
        assert done.returncode == 0, done.stderr
        assert phases_in(make_conninfo(server.url(), port=str(port))) == {"before the point": 3}
    finally:
        pg_ctl = str(server.bin_dir / "pg_ctl")
        stop = [
            "runuser",
            "-u",
            "postgres",
            "--",
            pg_ctl,
            "-D",
            str(destination),
            "-m",
            "immediate",
        ]
        subprocess.run([*stop, "stop"], capture_output=True)
        shutil.rmtree(destination, ignore_errors=True)


def test_the_second_repository_alone_restores_the_server_to_a_point(cluster, instance, monkeypatch):
    with shared_folder("repositories") as places:
        first, second = places / "repo1", places / "repo2"
        repository = {"path": str(first), "repo2": {"path": str(second)}}
        with archiving_server(cluster, "second-repository", repository) as (server, config, home):
            monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
            settings = BackupSettings(config_path=str(config))
            defs = definitions_for(config)
            for schedule in (
                names.server_backup_schedule(SERVER),
                names.repo2_backup_schedule(SERVER),
            ):
                result = run_as_scheduled(defs, instance, schedule)
                assert result.success, failure_messages(result)
                assert all(check.passed for check in result.get_asset_check_evaluations())
            for repo in (1, 2):  # each backup went to its own repository
                assert len(settings.server_engine(SERVER, repo=repo).info().backups) == 1

            drill = run_as_scheduled(defs, instance, names.repo2_drill_schedule(SERVER))
            assert drill.success, failure_messages(drill)
            (proven,) = drill.get_asset_check_evaluations()
            assert proven.asset_key == names.server_key(SERVER, names.PITR_RESTORE_TEST_REPO2)
            assert proven.passed, proven.description

            pruned = defs.resolve_job_def(names.PRUNE_SERVERS_JOB).execute_in_process(
                instance=instance, raise_on_error=False
            )
            assert pruned.success, failure_messages(pruned)
            judged = {
                o.asset_key for o in pruned.asset_observations_for_node("expire_server_backups")
            }
            assert judged == {
                names.server_key(SERVER, step)
                for step in (names.BASE_BACKUP, names.BASE_BACKUP_REPO2)
            }
            connection = Connection.from_url(SERVER, server.url())
            write_rows(server.url(), "before the point")
            name = f"before-migration-{uuid.uuid4().hex[:6]}"
            point = create_restore_point(SERVER, connection, name, requested_by="the tests")
            moment = dt.datetime.now(dt.UTC)
            write_rows(server.url(), "after the point")
            with psycopg.connect(server.url(), autocommit=True) as conn:  # all of it archived
                segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            wait_until_archived(SERVER, connection, segment)
            for repo in (1, 2):  # archive-push wrote the point's segment to both
                info = settings.server_engine(SERVER, repo=repo).info()
                assert info.wal_max is not None and info.wal_max[8:] >= point.wal_segment[8:]

            materialize_runbook(defs, instance)
            parser = RunbookParser()
            parser.feed(next((home / "backups").rglob("recovery_runbook.html")).read_text())
            by_hand = parser.blocks[("pitr-restore", f"{SERVER}:replica")]
            assert f"PGBACKREST_REPO1_PATH={second}" in by_hand and str(first) not in by_hand

            shutil.rmtree(first)  # the first repository is gone
            alone = settings.server_engine(SERVER, repo=2, alone=True)
            assert alone.repository.count == 1
            assert alone.repository.describe() == str(second)
            restore_by_hand(by_hand, moment, home / "by-hand", server)
            destination, port = home / "from-the-second", free_port()
            request = {
                "server": SERVER,
                "restore_point": name,
                "data_directory": str(destination),
                "port": port,
                "repository": 2,
            }
            result = defs.resolve_job_def(names.RESTORE_SERVER_JOB).execute_in_process(
                run_config={"ops": {"restore_server_to_target": {"config": request}}},
                instance=instance,
                raise_on_error=False,
            )
            try:
                assert result.success, failure_messages(result)
                found = phases_in(make_conninfo(server.url(), port=str(port)))
                assert found == {"before the point": 3}
                (audit,) = result.asset_observations_for_node("restore_server_to_target")
                assert audit.metadata["repository"].value == "2"
            finally:
                stop_copy(alone, destination, server.bin_dir)


def switch_segment(url: str, phase: str) -> str:
    """Write rows, close the WAL segment holding them; returns its name."""
    write_rows(url, phase)
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


def wait_until_listed(engine, segment: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(segment in path for path in engine.archive_files(engine.info().archive_id)):
        assert time.monotonic() < deadline, f"{segment} never reached {engine.repository}"
        time.sleep(0.5)


def observe(defs, instance):
    """The observe_wal_archive job, as its schedule runs it: every repository's asset."""
    return defs.resolve_job_def(names.WAL_ARCHIVE_JOB).execute_in_process(
        instance=instance, raise_on_error=False
    )


def outcomes(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def lag_alerts(instance) -> set[str]:
    return {p.key for p in check_problems(instance, [], [SERVER], "http://ui") if "lag" in p.key}


LIMIT_MINUTES = 0.25


def test_a_repository_refusing_writes_fails_its_own_lag_check_while_the_other_keeps_receiving_wal(
    cluster, instance, monkeypatch
):
    """Repository 2 turns read-only (a full disk, a bucket policy denying writes): WAL keeps
    reaching repository 1 (asynchronous archiving), repository 2's archive lag check fails with
    its figures and alerts, repository 1's passes; once writable again, repository 2 receives
    every segment it missed and the alert clears. Unreachable altogether, its observation fails
    naming it, and repository 1's is still made."""
    with shared_folder("repositories") as places:
        first, second = places / "repo1", places / "repo2"
        repository = {"path": str(first), "repo2": {"path": str(second)}}
        with archiving_server(cluster, "refusing-repository", repository) as (server, config, _):
            monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
            document = yaml.safe_load(config.read_text())
            document["servers"][SERVER]["archive_lag_alert_minutes"] = LIMIT_MINUTES
            config.write_text(yaml.safe_dump(document))
            settings = BackupSettings(config_path=str(config))
            engines = {repo: settings.server_engine(SERVER, repo=repo) for repo in (1, 2)}
            defs = definitions_for(config)
            backup = run_as_scheduled(defs, instance, names.repo2_backup_schedule(SERVER))
            assert backup.success, failure_messages(backup)
            for engine in engines.values():
                wait_until_listed(engine, switch_segment(server.url(), "both"))

            archive = next(p for p in (second / "archive" / SERVER).iterdir() if p.is_dir())
            modes = {f: f.stat().st_mode for f in [archive, *archive.iterdir()] if f.is_dir()}
            for folder in modes:
                folder.chmod(0o555)  # readable, no new segment can be written
            try:
                wait_until_listed(engines[1], switch_segment(server.url(), "first only"))
                time.sleep(LIMIT_MINUTES * 60 + 1)
                newest = switch_segment(server.url(), "first only, later")
                wait_until_listed(engines[1], newest)
                assert not any(
                    newest in path
                    for path in engines[2].archive_files(engines[2].info().archive_id)
                )
                broken = outcomes(observe(defs, instance))
            finally:
                for folder, mode in modes.items():
                    folder.chmod(mode)
            first_lag = broken[(names.WAL_ARCHIVE, names.ARCHIVE_LAG)]
            assert first_lag.passed, first_lag.description
            second_lag = broken[(names.WAL_ARCHIVE_REPO2, names.ARCHIVE_LAG)]
            assert not second_lag.passed
            assert f"repository 2 ({second})" in second_lag.description
            assert second_lag.metadata["archive_lag_seconds"].value > LIMIT_MINUTES * 60
            assert not broken[(names.WAL_ARCHIVE, names.ARCHIVING_SUCCEEDS)].passed
            alert = f"check:pg_server/{SERVER}/{names.WAL_ARCHIVE_REPO2}:{names.ARCHIVE_LAG}"
            assert lag_alerts(instance) == {alert}

            wait_until_listed(engines[2], newest)  # the segments it missed arrive
            wait_until_listed(engines[2], switch_segment(server.url(), "both again"))
            healed = outcomes(observe(defs, instance))
            assert all(outcome.passed for outcome in healed.values()), [
                o.description for o in healed.values() if not o.passed
            ]
            continuous = healed[(names.WAL_ARCHIVE_REPO2, names.WAL_CONTINUOUS)]
            assert continuous.metadata["segments_missing"].value == "0"
            assert lag_alerts(instance) == set()

            mode = second.stat().st_mode
            second.chmod(0o000)  # unreachable altogether
            try:
                unreachable = observe(defs, instance)
            finally:
                second.chmod(mode)
            assert str(second) in failure_messages(unreachable)
            assert {e.asset_key for e in unreachable.get_asset_materialization_events()} == {
                names.server_key(SERVER, names.WAL_ARCHIVE)
            }
