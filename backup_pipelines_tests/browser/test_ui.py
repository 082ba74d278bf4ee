"""What a user sees in the Dagster UI, in Debian's chromium driven by Playwright, against a
running deployment (`dagster dev`: webserver and daemon) whose runs were submitted to it the
way the demo submits them. Each test saves a screenshot under ui-screenshots/ (ignored by git).
"""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, expect

from backup_pipelines import names
from backup_pipelines.core.common.config import server_config_source
from backup_pipelines.core.postgres.dump import utc_today
from backup_pipelines.trigger.remote import Deployment, location_of
from backup_pipelines_demo.cluster import LocalCluster, free_port
from backup_pipelines_demo.first_runs import first_runs
from backup_pipelines_tests.support.archiving import start_archiving
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    PITR_PASSWORD_ENV,
    RESTORE_TEST_PASSWORD,
    TEST_DATABASES,
    config_document,
    server_document,
)
from backup_pipelines_tests.support.folders import shared_folder
from backup_pipelines_tests.support.paths import SCREENSHOTS
from backup_pipelines_tests.support.processes import stop

WAIT_MS = 60_000  # the UI fetches statuses after the page loads
expect.set_options(timeout=WAIT_MS)


@dataclass(frozen=True)
class RunningDeployment:
    url: str
    location: str
    archive: Path


SERVER = "main"  # a PITR server beside the databases


@pytest.fixture(scope="module")
def archiving_home() -> Iterator[Path]:
    with shared_folder("ui-pitr") as home:
        yield home


@pytest.fixture(scope="module")
def deployment(cluster, tmp_path_factory, archiving_home) -> Iterator[RunningDeployment]:
    root = tmp_path_factory.mktemp("ui")
    config = root / "backup_pipelines.yaml"
    server = LocalCluster(archiving_home / "server", free_port(), uuid.uuid4().hex)
    server.init()
    repository = {"path": str(archiving_home / "repository")}
    document = config_document(
        cluster,
        restore_test={"test_each_new_archive": True},
        replica={"local": {"path": str(root / "replica")}},
        servers=server_document(server, repository, SERVER),
        objectives={"rpo_minutes": 1500, "rto_minutes": 60},  # as the demo promises
    )
    config.write_text(yaml.safe_dump(document))
    start_archiving(server, config, SERVER)
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BACKUP_PIPELINES_CONFIG": str(config),
        "TEST_BACKUP_PASSWORD": BACKUP_PASSWORD,
        "TEST_RESTORE_PASSWORD": RESTORE_TEST_PASSWORD,
        PITR_PASSWORD_ENV: server.superuser_password,
    }
    dagster = str(Path(sys.executable).parent / "dagster")
    command = [dagster, "dev", "-m", "backup_pipelines.definitions", "-h", "127.0.0.1"]
    with (root / "dagster.log").open("wb") as log:
        dagster_dev = subprocess.Popen(
            [*command, "-p", str(port)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        remote = Deployment(f"http://127.0.0.1:{port}")
        assert first_runs(remote, config, "the browser tests", server.change_a_setting) == 0
        location, _ = location_of(remote, names.DAILY_BACKUP_JOB)
        yield RunningDeployment(
            remote.url, location["repositoryLocationName"], root / "backups" / "archive"
        )
    finally:
        stop(dagster_dev, group=True)
        server.destroy()


@pytest.fixture
def page(browser: Browser, deployment: RunningDeployment) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    # Dagster's first-visit community popup, dismissed whenever it covers the page.
    opened.add_locator_handler(community_popup(opened), lambda skip: skip.click())
    yield opened
    context.close()


def community_popup(page: Page) -> Locator:
    return page.get_by_role("button", name="Skip")


def visit(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")


def screenshot(page: Page, name: str) -> None:
    if community_popup(page).is_visible():
        community_popup(page).click()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.mark.parametrize("database", TEST_DATABASES)
def test_each_database_group_shows_its_chain_and_its_second_copy(page, deployment, database):
    group = names.database_group(database)
    visit(page, f"{deployment.url}/locations/{deployment.location}/asset-groups/{group}/lineage")
    for step in (*names.DATABASE_STEPS, *names.REPLICA_STEPS):
        expect(page.get_by_text(step, exact=True).first).to_be_visible()
    # Every step of today is done and its checks passed: no red anywhere in the chain.
    # One check each: dump, restore_test, replica, replica_restore_test (the failover drill).
    expect(page.get_by_text("1 / 1 Passed")).to_have_count(4)
    expect(page.get_by_text("3 / 3 Passed")).to_have_count(1)  # verification
    expect(page.get_by_text("Failed", exact=False)).to_have_count(0)
    screenshot(page, f"1-group-{group}")


def test_checks_tab_shows_each_check_with_its_evidence(page, deployment):
    key = "/".join(names.database_key("agentic", names.VERIFICATION).path)
    visit(page, f"{deployment.url}/assets/{key}?view=checks")
    for check in names.BACKUP_CHECKS[names.VERIFICATION]:
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded")).to_have_count(3)
    expect(page.get_by_role("cell", name="sha256_expected")).to_be_visible()  # the evidence
    expect(page.get_by_text(utc_today(), exact=True).first).to_be_visible()  # its partition
    screenshot(page, "2-checks-verification")

    key = "/".join(names.database_key("agentic", names.RESTORE_TEST).path)
    visit(page, f"{deployment.url}/assets/{key}?view=checks")
    expect(page.get_by_text(names.RESTORED_DATA_MATCHES, exact=True).first).to_be_visible()
    for evidence in ("restore_duration_seconds", "rows_compared", "mismatches"):
        expect(page.get_by_role("cell", name=evidence)).to_be_visible()  # RTO, what compared
    expect(page.get_by_text("row(s) match the snapshot")).to_be_visible()
    screenshot(page, "3-checks-restore-test")


def test_partitions_tab_shows_today_proven_restorable(page, deployment):
    key = "/".join(names.database_key("agentic", names.RESTORE_TEST).path)
    visit(page, f"{deployment.url}/assets/{key}?view=partitions")
    expect(page.get_by_text("Materialized (1)")).to_be_visible()
    expect(page.get_by_text("Failed (0)")).to_be_visible()
    screenshot(page, "4-partitions-restore-test")


def test_automation_page_lists_every_schedule_and_sensor_switched_on(page, deployment):
    visit(page, f"{deployment.url}/automation")
    automations = [
        names.DAILY_BACKUP_SCHEDULE,
        names.WEEKLY_RESTORE_TEST_SCHEDULE,
        names.STORAGE_USAGE_SCHEDULE,
        names.AUDIT_REPORT_SCHEDULE,
        names.NEW_ARCHIVE_RESTORE_TEST_SENSOR,
        names.NEW_ARCHIVE_REPLICA_SENSOR,
        names.FAILOVER_DRILL_SCHEDULE,
        names.RUNBOOK_SENSOR,
        names.RETENTION_SENSOR,
        names.ALERTS_SENSOR,
        names.server_backup_schedule(SERVER),
        names.pitr_restore_test_schedule(SERVER),
        names.WAL_ARCHIVE_SCHEDULE,
        names.SERVER_RETENTION_SCHEDULE,
        names.NEW_FULL_BACKUP_PITR_TEST_SENSOR,
        names.CONFIG_BACKUP_SCHEDULE,
    ]
    for name in automations:
        row = page.locator("[data-index]").filter(has=page.get_by_text(name, exact=True))
        # The row's first checkbox selects it; the second is its on/off switch.
        expect(row.locator("input[type=checkbox]").nth(1)).to_be_checked()
    screenshot(page, "5-automation")


def test_jobs_page_shows_the_last_daily_backup_run(page, deployment):
    visit(page, f"{deployment.url}/jobs")
    expect(page.get_by_text(names.DAILY_BACKUP_JOB, exact=True)).to_be_visible()
    screenshot(page, "6-jobs")
    job = names.DAILY_BACKUP_JOB
    visit(page, f"{deployment.url}/locations/{deployment.location}/jobs/{job}/runs")
    expect(page.get_by_text("Success").first).to_be_visible()
    expect(page.get_by_text(f"partition: {utc_today()}").first).to_be_visible()
    expect(page.get_by_text("the browser tests").first).to_be_visible()  # who submitted it
    screenshot(page, "7-job-daily-backup")


def test_runbook_page_opens_with_the_objectives_met_and_every_database_verified(page, deployment):
    runbook = deployment.archive / "recovery_runbook.html"
    visit(page, f"{deployment.url}/assets/{names.RECOVERY_RUNBOOK}")
    expect(page.locator(f'a[href="{runbook.as_uri()}"]').first).to_be_visible()
    page.goto(runbook.as_uri())
    expect(page.locator("h2").first).to_have_text("Are we covered? Recovery objectives")
    expect(page.get_by_text("Every recovery objective is met.")).to_be_visible()
    expect(page.get_by_text("Every database has a verified archive.")).to_be_visible()
    for database in TEST_DATABASES:
        expect(page.locator(f"h2#{database}")).to_be_visible()
    screenshot(page, "8-runbook")


def test_server_group_shows_its_recovery_window_and_a_proven_pitr_restore(page, deployment):
    group = names.server_group(SERVER)
    visit(page, f"{deployment.url}/locations/{deployment.location}/asset-groups/{group}/lineage")
    for step in (names.BASE_BACKUP, names.GLOBALS, names.WAL_ARCHIVE, names.PITR_RESTORE_TEST):
        expect(page.get_by_text(step, exact=True).first).to_be_visible()
    expect(page.get_by_text("Failed", exact=False)).to_have_count(0)
    screenshot(page, f"9-group-{group}")

    key = "/".join(names.server_key(SERVER, names.WAL_ARCHIVE).path)
    visit(page, f"{deployment.url}/assets/{key}")
    expect(page.get_by_text("you can restore to any moment between").first).to_be_visible()
    for table in ("recovery_timeline", "restore_points"):  # markdown tables
        expect(page.get_by_text(table, exact=True).first).to_be_visible()
    expect(page.get_by_text("first-runs-").first).to_be_visible()  # the first runs' point
    screenshot(page, "10-wal-archive-recovery-window")

    key = "/".join(names.server_key(SERVER, names.PITR_RESTORE_TEST).path)
    visit(page, f"{deployment.url}/assets/{key}?view=checks")
    expect(page.get_by_text(names.PITR_RESTORE_PROVEN, exact=True).first).to_be_visible()
    for evidence in ("restore_duration_seconds", "recovery_point_error_seconds", "target_time"):
        expect(page.get_by_role("cell", name=evidence)).to_be_visible()
    expect(page.get_by_text("the one after it is not").first).to_be_visible()
    screenshot(page, "11-checks-pitr-restore-test")


def test_configuration_snapshot_shows_the_diff_of_the_changed_setting(page, deployment):
    key = "/".join(names.config_key(server_config_source(SERVER)).path)
    visit(page, f"{deployment.url}/assets/{key}")
    expect(page.get_by_text("1 changed", exact=True).first).to_be_visible()
    expect(page.get_by_text("postgresql.auto.conf").first).to_be_visible()
    expect(page.get_by_text("+log_min_duration_statement").first).to_be_visible()  # the diff
    screenshot(page, "14-config-diff")

    visit(page, f"{deployment.url}/assets/{key}?view=checks")
    for check in names.CONFIG_CHECKS:
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
    screenshot(page, "15-checks-config")
