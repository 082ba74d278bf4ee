"""A WAL segment deleted from a real pgBackRest repository: continuity is counted from the
repository's listing, so `wal_continuous` fails naming the segment (pgBackRest's own `verify`
still exits 0, shown here); the window shows only what can be reached; the PITR restore test
records the stage, the reason and PostgreSQL's own log lines; `restore_server` refuses a target
in the gap; the alert names the server. The segment arithmetic and the timeline chain are
tested without a server."""

import datetime as dt
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import materialize

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import archiver_status, wait_until_archived
from backup_pipelines.core.servers.window import observe_archive
from backup_pipelines.defs.alerts.health import check_problems
from backup_pipelines.defs.alerts.state import AlertState
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster
from backup_pipelines_tests.support.archiving import archiving_server
from backup_pipelines_tests.support.config import (
    PITR_PASSWORD_ENV,
    today,
)
from backup_pipelines_tests.support.runs import (
    alerts_tick,
    check_evaluations,
    definitions_for,
    failure_messages,
    materialize_runbook,
    metadata_number,
    watching_since,
)

SERVER = "main"
MIB16 = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def gapped(cluster) -> Iterator[tuple[LocalCluster, Path, Path]]:
    with archiving_server(cluster, "gap") as (server, config, home):
        yield server, config, home / "repository"


def commit_and_switch(server: LocalCluster, phase: str) -> tuple[dt.datetime, str]:
    """Commit a row of `phase` and switch the segment so it is archived; returns the moment just
    before the commit and the segment that holds it."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        committed = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.05)
        conn.execute("INSERT INTO ledger (phase) VALUES (%s)", (phase,))
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    engine_connection = Connection.from_url(SERVER, server.url())
    wait_until_archived(SERVER, engine_connection, segment)
    return committed, segment


def materialize_step(defs, instance, step: str, partitioned: bool = True):
    return materialize(
        assets=list(defs.assets or []),
        selection=[names.server_key(SERVER, step)],
        partition_key=today() if partitioned else None,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def test_a_deleted_segment_is_found_named_and_cut_out_of_the_window(gapped, instance, monkeypatch):
    server, config, repository = gapped
    monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
    monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(config))
    defs = definitions_for(config)
    settings = BackupSettings(config_path=str(config))
    engine = settings.server_engine(SERVER)

    first = materialize_step(defs, instance, names.BASE_BACKUP)
    assert first.success, failure_messages(first)
    assert check_evaluations(first)[names.WAL_CONTINUOUS].passed

    before_gap, _ = commit_and_switch(server, "before the gap")
    in_gap, lost = commit_and_switch(server, "in the gap")
    commit_and_switch(server, "after the gap")
    (stored,) = repository.rglob(f"{lost}-*")
    stored.unlink()
    # pgBackRest's own verdict: verify exits 0 for a gap no backup needs for consistency.
    assert engine.verify() == []

    # The PITR restore test (no backup after the gap): a failed evaluation with the evidence.
    tested = materialize_step(defs, instance, names.PITR_RESTORE_TEST)
    assert not tested.success
    proven = check_evaluations(tested)[names.PITR_RESTORE_PROVEN]
    assert not proven.passed
    metadata = {name: value.value for name, value in proven.metadata.items()}
    assert metadata["failed_stage"] == "replay"
    assert lost in proven.description and lost in metadata["reason"]
    log = str(metadata["postgres_log"])
    assert "recovery ended before configured recovery target was reached" in log
    assert server.superuser_password not in log
    assert "not promoted" not in proven.description
    assert not list((config.parent / "scratch").iterdir())  # the copy is gone

    # A base backup after the gap: it passes verification, and wal_continuous fails naming
    # the segment and the stretch it makes unreachable.
    second = materialize_step(defs, instance, names.BASE_BACKUP)
    assert not second.success  # the blocking check failed
    checks = check_evaluations(second)
    assert checks[names.BASE_BACKUP_VERIFIED].passed
    continuity = checks[names.WAL_CONTINUOUS]
    assert not continuity.passed
    assert f"segment {lost} missing" in continuity.description
    assert "cannot be reached" in continuity.description

    # wal_archive: the window is two stretches; the moment in the gap is in neither.
    observed = materialize_step(defs, instance, names.WAL_ARCHIVE, partitioned=False)
    assert not check_evaluations(observed)[names.WAL_CONTINUOUS].passed
    event = instance.get_latest_materialization_event(names.server_key(SERVER, names.WAL_ARCHIVE))
    shown = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert metadata_number(shown["wal_missing_segments"]) == 1
    assert len(str(shown["recovery_window_stretches"]).splitlines()) == 2
    assert lost in str(shown["wal_gaps"])
    info = engine.info()
    window = observe_archive(
        engine, info, archiver_status(settings.server_connection(SERVER))
    ).window
    assert window is not None and len(window.stretches) == 2
    assert window.contains(before_gap) and not window.contains(in_gap)
    # The first stretch ends at the last commit before the gap: 'before the gap' is its end.
    assert before_gap < window.stretches[0].end < in_gap
    assert window.stretches[1].start == info.backups[-1].stopped

    # The runbook shows the gap, and its example target lies inside a reachable stretch.
    materialize_runbook(defs, instance)
    page = next(config.parent.rglob("recovery_runbook.html")).read_text()
    assert "The WAL archive has a gap" in page and lost in page
    (example,) = re.findall(r"export TARGET_TIME='([^']+)'", page)
    assert window.contains(dt.datetime.fromisoformat(example))

    # restore_server refuses the moment in the gap, explaining why.
    job = defs.resolve_job_def(names.RESTORE_SERVER_JOB)
    refused = job.execute_in_process(
        run_config={
            "ops": {
                "restore_server_to_target": {
                    "config": {
                        "server": SERVER,
                        "target_time": in_gap.isoformat(),
                        "data_directory": str(
                            Path(tempfile.gettempdir()) / f"never-{uuid.uuid4().hex}"
                        ),
                    }
                }
            }
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not refused.success
    message = failure_messages(refused)
    assert "lies in a gap of the WAL archive" in message and lost in message

    # The alert names the server; its details name the segment.
    cursor = alerts_tick(defs, instance, watching_since(1))
    announced = AlertState.from_cursor(cursor, dt.datetime.now(dt.UTC)).open
    gap_alerts = {k: title for k, title in announced.items() if k.endswith(names.WAL_CONTINUOUS)}
    assert gap_alerts and all(title.startswith(f"{SERVER}: ") for title in gap_alerts.values())
    details = [
        problem.details
        for problem in check_problems(instance, [], [SERVER], "http://ui")
        if problem.key in gap_alerts
    ]
    assert details and all(lost in detail for detail in details)


# --- without a server ---------------------------------------------------------------------
