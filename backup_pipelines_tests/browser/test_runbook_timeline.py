"""The recovery runbook's timeline in Debian's chromium with the network blocked: a page drawn
from a made-up server answers clicks and keys; a page written by the recovery_runbook asset for
a real archiving server gives, for a clicked restore point and a clicked moment, commands and a
run config that restore exactly the rows written before them."""

import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, expect
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckRecord
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.recovery.runbook import ServerRunbookEntry, render_runbook
from backup_pipelines.core.recovery.timeline import PitrTestOutcome, ServerTimeline
from backup_pipelines.core.servers import wal
from backup_pipelines.core.servers.archiver import wait_until_archived
from backup_pipelines.core.servers.pgbackrest import BackupSet, Repository
from backup_pipelines.core.servers.restore_points import RestorePoint
from backup_pipelines.core.servers.scratch import free_port, stop_copy
from backup_pipelines.core.servers.window import RecoveryWindow
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster
from backup_pipelines_tests.support.archiving import archiving_server
from backup_pipelines_tests.support.config import PITR_PASSWORD_ENV, today
from backup_pipelines_tests.support.paths import SCREENSHOTS
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    materialize_runbook,
)

SERVER = "main"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MIB16 = 16 << 20


@pytest.fixture
def offline(browser: Browser) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context with the network cut off; every request but file:// ones is refused
    and listed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    refused: list[str] = []

    def only_files(route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_files)
    yield context, refused
    context.close()


def open_page(context: BrowserContext, path: Path) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert errors == []
    return page


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def click_moment(page: Page, moment_ms: float) -> None:
    track = page.locator(".tl-track")
    start, end = (float(track.get_attribute(name)) for name in ("data-start", "data-end"))
    box = track.bounding_box()
    assert box is not None
    x = box["x"] + (moment_ms - start) / (end - start) * box["width"]
    page.mouse.click(x, box["y"] + box["height"] / 4)


# A made-up server: a full backup, a gap in its WAL, a differential after the gap, two restore
# points and a passed PITR test.


def _lsn(number: int) -> str:
    return f"{number >> 32:X}/{number & 0xFFFFFFFF:X}"


def _backup(label: str, kind: str, hours: tuple[int, int], segments: tuple[int, int]) -> BackupSet:
    return BackupSet(
        label,
        kind,
        T0 + hours[0] * HOUR,
        T0 + hours[1] * HOUR,
        _lsn(segments[0] * MIB16),
        _lsn(segments[1] * MIB16 + 100),
        wal.Segment(1, segments[0]).name(MIB16),
        wal.Segment(1, segments[1]).name(MIB16),
        30_000_000,
        3_000_000,
        None,
    )


FULL = _backup("20261201-000000F", "full", (0, 1), (2, 3))
DIFF = _backup("20261201-000000F_20261201-070000D", "diff", (7, 8), (20, 21))
GAP = wal.Gap(
    "000000010000000000000006",
    "000000010000000000000006",
    1,
    6,
    6,
    reachable_until=T0 + 3 * HOUR,
    resumes_at=T0 + 8 * HOUR,
)
TEST = CheckRecord(
    True,
    "restored to the target",
    {
        "target_time": "2026-12-01 09:30:00.000+00:00",
        "achieved_recovery_point": "2026-12-01 09:29:59.100+00:00",
        "restore_duration_seconds": 12.5,
    },
    T0 + 10 * HOUR,
    "a-run",
)


def made_up_page(folder: Path) -> Path:
    timeline = ServerTimeline(
        RecoveryWindow(
            (wal.Stretch(T0 + HOUR, T0 + 3 * HOUR), wal.Stretch(T0 + 8 * HOUR, T0 + 10 * HOUR)),
            (GAP,),
        ),
        [FULL, DIFF],
        [
            RestorePoint(
                SERVER, "before-migration-42", _lsn(4 * MIB16), T0 + 2 * HOUR, "x", "ci", "v42"
            ),
            RestorePoint(SERVER, "release 7's", _lsn(25 * MIB16), T0 + 9 * HOUR, "x", "alice", ""),
        ],
        [PitrTestOutcome.from_record(TEST)],
        {"shop": ["2026-11-30", "2026-12-01"]},
        30 * MIB16,
    )
    entry = ServerRunbookEntry(
        SERVER, SERVER, Repository({"repo1-path": "/srv/pitr"}), "pg_ctl", timeline, TEST
    )
    path = folder / "runbook.html"
    path.write_text(render_runbook([], generated_at=T0 + 10 * HOUR, servers=(entry,)))
    return path


def test_made_up_timeline_answers_clicks_and_keys_offline(offline, tmp_path):
    context, refused = offline
    page = open_page(context, made_up_page(tmp_path))
    chosen, commands = page.locator(".tl-chosen"), page.locator(".tl-commands")
    run_config = page.locator(".tl-run-config")

    page.get_by_role("button", name="release 7's", exact=True).click()
    expect(chosen).to_contain_text("Restore point release 7's")
    expect(chosen).to_contain_text(f"Restores from diff backup {DIFF.label}")
    expect(chosen).to_contain_text("replays 80.0 MiB of WAL")  # from its start, segment 20, to 25
    expect(commands).to_contain_text(f"--set={DIFF.label} --type=name --target='release 7'\\''s'")
    assert (
        yaml.safe_load(run_config.inner_text())["ops"]["restore_server_to_target"]["config"][
            "restore_point"
        ]
        == "release 7's"
    )

    click_moment(page, (T0 + 5 * HOUR).timestamp() * 1000)  # inside the gap
    expect(chosen).to_contain_text("cannot be restored to: it lies in a gap of the WAL archive")
    expect(commands).to_be_hidden()

    click_moment(page, (T0 + 30 * dt.timedelta(minutes=1)).timestamp() * 1000)
    expect(chosen).to_contain_text(f"while base backup {FULL.label} was being taken")

    page.get_by_role(
        "button", name="PITR restore test passed: target 2026-12-01 09:30:00+00:00"
    ).click()
    expect(chosen).to_contain_text("Moment 2026-12-01 09:30:00+00. Restores from diff backup")
    expect(commands).to_contain_text("--type=time --target='2026-12-01 09:30:00+00'")

    # The keyboard alone: focus the bar, go to its start, step right, choose.
    page.locator(".tl-track").focus()
    page.keyboard.press("Home")
    for _ in range(2):
        page.keyboard.press("Shift+ArrowRight")  # 10 steps of (10 h / 200) = 30 minutes
    page.keyboard.press("Enter")
    expect(chosen).to_contain_text("Moment 2026-12-01 01:00:00+00. Restores from full backup")

    page.locator(".tl-moment").fill("2026-12-01 02:30")
    page.get_by_role("button", name="Show").click()
    expect(chosen).to_contain_text("Moment 2026-12-01 02:30:00+00")
    config = yaml.safe_load(run_config.inner_text())["ops"]["restore_server_to_target"]["config"]
    assert config["target_time"] == "2026-12-01 02:30:00+00" and config["server"] == SERVER
    page.locator(".tl-moment").fill("yesterday")
    page.get_by_role("button", name="Show").click()
    expect(chosen).to_contain_text("'yesterday' cannot be restored to: it is not a time")
    assert refused == []


# A real server, its runbook written by the recovery_runbook asset.


@pytest.fixture(scope="module")
def archiving(cluster) -> Iterator[tuple[LocalCluster, Path, Path]]:
    with archiving_server(cluster, "timeline") as made:
        yield made


def write_rows(server: LocalCluster, phase: str) -> dt.datetime:
    """Three rows of `phase`, committed; when (the server's clock) the commit was done."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("INSERT INTO ledger (phase) SELECT %s FROM generate_series(1, 3)", (phase,))
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def phases_in(server: LocalCluster, port: int) -> dict[str, int]:
    with psycopg.connect(make_conninfo(server.url(), port=str(port))) as conn:
        return dict(conn.execute("SELECT phase, count(*) FROM ledger GROUP BY phase").fetchall())


def test_a_clicked_point_and_moment_give_commands_that_restore_their_rows(
    archiving, offline, instance, monkeypatch
):
    server, config, home = archiving
    monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
    defs = definitions_for(config)
    backup = defs.resolve_job_def(names.SERVER_BACKUP_JOB).execute_in_process(
        instance=instance, partition_key=today(), raise_on_error=False
    )
    assert backup.success, failure_messages(backup)
    write_rows(server, "before the point")
    point = f"before-migration-{uuid.uuid4().hex[:6]}"
    made = defs.resolve_job_def(names.CREATE_RESTORE_POINT_JOB).execute_in_process(
        run_config={"ops": {names.RESTORE_POINT_OP: {"config": {"server": SERVER, "name": point}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert made.success, failure_messages(made)
    after_point = write_rows(server, "after the point")
    time.sleep(4)  # room on the bar for a click between the two commits
    late = write_rows(server, "late")
    connection = Connection.from_url(SERVER, server.url())
    with connection.connect(autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    wait_until_archived(SERVER, connection, segment)
    materialize_runbook(defs, instance)
    context, refused = offline
    page = open_page(context, next((home / "backups").rglob("recovery_runbook.html")))
    chosen = page.locator(".tl-chosen")

    page.get_by_role("button", name=point, exact=True).click()
    expect(chosen).to_contain_text(f"Restore point {point}")
    commands = page.locator(".tl-commands").inner_text()
    screenshot(page, "12-runbook-timeline-restore-point")
    click_moment(page, (after_point + (late - after_point) / 2).timestamp() * 1000)
    expect(chosen).to_contain_text("Restores from full backup")
    run_config = yaml.safe_load(page.locator(".tl-run-config").inner_text())
    screenshot(page, "13-runbook-timeline-moment")
    assert refused == []

    engine = BackupSettings(config_path=str(config)).server_engine(SERVER)
    by_hand, port = home / "by-hand", free_port()
    shell_env = {"PATH": os.environ["PATH"], "RESTORE_DIR": str(by_hand), "RESTORE_PORT": str(port)}
    done = subprocess.run(["bash", "-c", commands], env=shell_env, capture_output=True, text=True)
    try:
        assert done.returncode == 0, done.stderr
        assert phases_in(server, port) == {"before the point": 3}
    finally:
        stop_copy(engine, by_hand, server.bin_dir)
        shutil.rmtree(by_hand, ignore_errors=True)

    request = run_config["ops"]["restore_server_to_target"]["config"]
    by_job, port = home / "by-job", free_port()
    request.update(data_directory=str(by_job), port=port)  # this machine's folder and port
    restored = defs.resolve_job_def(names.RESTORE_SERVER_JOB).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False
    )
    try:
        assert restored.success, failure_messages(restored)
        assert phases_in(server, port) == {"before the point": 3, "after the point": 3}
    finally:
        stop_copy(engine, by_job, server.bin_dir)
        shutil.rmtree(by_job, ignore_errors=True)
