"""Triggering from outside: the CLI and the HTTP trigger against a real Dagster webserver."""

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.defs.postgres.assets import database_dump_pool
from backup_pipelines.defs.servers.restore_points import recorded_restore_points
from backup_pipelines.trigger.remote import (
    _DATABASE_BACKUP,
    Deployment,
    _backup_selector,
    run_status,
    submit_export,
    submit_run,
    wait_for_run,
)
from backup_pipelines_demo.cluster import LocalCluster, free_port
from backup_pipelines_tests.support.archiving import start_archiving
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    PITR_PASSWORD_ENV,
    RESTORE_TEST_PASSWORD,
    backup_url,
    scratch_url,
    server_document,
    today,
    yesterday,
)
from backup_pipelines_tests.support.paths import REPOSITORY
from backup_pipelines_tests.support.processes import (
    production_instance_env,
    serve_definitions,
    stop,
)

CLI = [sys.executable, "-m", "backup_pipelines.trigger.cli"]
TRIGGER_SECRET = "trigger-secret-3f9c1b7e5a"


def wait_for_http(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[:4]} exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture(scope="module")
def webserver(cluster, s3_endpoint, tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The production set-up: dagster.yaml on a real PostgreSQL, a webserver on a free
    port and the daemon that dequeues runs. Yields (url, environment, DAGSTER_HOME)."""
    root = tmp_path_factory.mktemp("deployment")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS dagster_remote")
        admin.execute("CREATE DATABASE dagster_remote")
    logs_bucket = f"dagster-logs-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=logs_bucket)
    config = root / "backup_pipelines.yaml"
    databases = {name: {"url": backup_url(cluster, name)} for name in ("agentic", "langfuse")}
    # A server archiving WAL (point-in-time recovery); it runs as postgres, so not under root's
    # private pytest folder.
    server_home = Path(tempfile.mkdtemp(prefix="backup-pipelines-remote-pitr-"))
    server_home.chmod(0o755)
    server = LocalCluster(server_home / "server", free_port(), uuid.uuid4().hex)
    server.init()
    document = {
        "storage": {"local": {"path": "./backups"}},
        "databases": databases,
        "servers": server_document(server, {"path": str(server_home / "repository")}),
        "restore_test": {"url": scratch_url(cluster)},
    }
    config.write_text(yaml.safe_dump(document))
    start_archiving(server, config)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BACKUP_PIPELINES_CONFIG": str(config),
        "TEST_BACKUP_PASSWORD": BACKUP_PASSWORD,
        "TEST_RESTORE_PASSWORD": RESTORE_TEST_PASSWORD,
        PITR_PASSWORD_ENV: server.superuser_password,
        **production_instance_env(cluster, "dagster_remote", s3_endpoint, logs_bucket),
    }
    port = free_port()
    bin_dir = Path(sys.executable).parent
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-m", "backup_pipelines.definitions"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    webserver = serve_definitions([str(bin_dir / "dagster-webserver")], port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/server_info", webserver)
        yield url, env, home
    finally:
        for process in (webserver, daemon):
            stop(process, grace=60)
        server.destroy()
        shutil.rmtree(server_home, ignore_errors=True)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=600
    )


def submitted_and_succeeded(url: str, env: dict[str, str], *command: str) -> str:
    """Run a submitting CLI command with --wait; it prints the run id, then SUCCESS."""
    done = cli("--url", url, *command, "--wait", "--timeout", "300", env=env)
    assert done.returncode == 0, done.stderr
    run_id, status = done.stdout.split()
    assert status == "SUCCESS"
    return run_id


def test_cli_submits_one_database_and_reports_the_run(webserver):
    url, env, home = webserver
    run_id = submitted_and_succeeded(url, env, "backup", "agentic")

    backups = home.parent / "backups" / "archive"
    assert (backups / "agentic" / today() / "manifest.json").exists()
    assert not (backups / "langfuse").exists()  # only the database asked for

    run, checks = run_and_checks(env, home, run_id)
    assert run.job_name == "daily_backup"
    assert run.tags["dagster/partition"] == today()
    assert run.tags["backup_pipelines/triggered_by"].startswith("backup-pipelines CLI (")
    assert checks == {
        names.DUMP_COMPLETE,
        names.ARCHIVE_CHECKSUM,
        names.ARCHIVE_CONTENTS,
        names.SIZE_CHANGE,
    }

    assert cli("--url", url, "status", run_id, env=env).stdout.strip() == "SUCCESS"
    unknown = cli("--url", url, "status", "0" * 36, env=env)
    assert unknown.returncode == 2 and "RunNotFoundError" in unknown.stderr
    refused = cli("--url", url, "backup", "nope", env=env)
    assert refused.returncode == 2, refused.stdout
    assert f"{url} backs up no database 'nope'; its databases: agentic, langfuse" in (
        refused.stderr
    )


def run_and_checks(env: dict[str, str], home: Path, run_id: str) -> tuple[DagsterRun, set[str]]:
    """The run as the deployment's instance records it, and the checks it evaluated."""
    with deployment_instance(env, home) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        checks = {
            event.asset_check_evaluation.check_name
            for event in instance.all_logs(run_id)
            if event.dagster_event
            and event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        }
    return run, checks


def test_cli_queues_one_servers_base_backup(webserver):
    url, env, home = webserver
    run_id = submitted_and_succeeded(url, env, "backup-server", "main")
    run, checks = run_and_checks(env, home, run_id)
    assert run.job_name == "server_backup" and run.tags["dagster/partition"] == today()
    assert run.asset_selection == {
        names.server_key("main", names.BASE_BACKUP),
        names.server_key("main", names.GLOBALS),
    }
    assert checks == {names.BASE_BACKUP_VERIFIED, names.WAL_CONTINUOUS}
    globals_sql = (
        home.parent / "backups" / "dumps" / "servers" / "main" / "globals" / f"{today()}.sql"
    )
    assert "CREATE ROLE" in globals_sql.read_text()

    refused = cli("--url", url, "backup-server", "agentic", env=env)
    assert refused.returncode == 2, refused.stdout
    assert f"{url} backs up no server 'agentic'; its servers: main" in refused.stderr


def test_cli_makes_a_restore_point_archived_and_recorded_and_refuses_a_bad_name(webserver):
    url, env, home = webserver
    name = f"before-migration-{uuid.uuid4().hex[:6]}"
    done = cli("--url", url, "restore-point", "main", name, "--note", "schema v42", env=env)
    assert done.returncode == 0, done.stderr
    run_id, status = done.stdout.split()
    assert status == "SUCCESS"
    with deployment_instance(env, home) as instance:
        assert instance.get_run_by_id(run_id).job_name == names.CREATE_RESTORE_POINT_JOB
        (point,) = [p for p in recorded_restore_points(instance, "main") if p.name == name]
    assert point.note == "schema v42" and "/" in point.lsn
    assert point.requested_by.startswith("submitted by backup-pipelines CLI")

    # Refused before anything is submitted (a name already in the window fails its run: the
    # HTTP trigger's test shows that one).
    too_long = cli("--url", url, "restore-point", "main", "x" * 64, env=env)
    assert too_long.returncode == 2 and "PostgreSQL allows at most 63" in too_long.stderr


def test_cli_fails_clearly_when_the_server_is_down():
    port = free_port()
    done = cli("--url", f"http://ops:hunter2-secret@127.0.0.1:{port}", "backup", "agentic")
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"cannot reach the Dagster webserver at http://127.0.0.1:{port}" in done.stderr
    assert "hunter2-secret" not in done.stderr


def post(
    url: str, secret: str | None = None, method: str = "POST", body: dict | None = None
) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, method=method, data=data if method == "POST" else None)
    if secret is not None:
        request.add_header("X-Backup-Pipelines-Secret", secret)
    try:
        # A restore point is answered once it is archived: its run has to finish first.
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body.startswith(b"{") else {}


@contextlib.contextmanager
def serving_trigger(url: str, env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """`serve-trigger` on a free port: its base URL, and its log (filled once it stopped)."""
    port = free_port()
    trigger = subprocess.Popen(
        [*CLI, "--url", url, "serve-trigger", "--port", str(port)],
        env={**env, "BACKUP_PIPELINES_TRIGGER_SECRET": TRIGGER_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", trigger)
        yield f"http://127.0.0.1:{port}", log
    finally:
        trigger.terminate()
        log.append(trigger.communicate(timeout=30)[0])


def test_http_trigger_answers_202_401_404(webserver):
    url, env, _ = webserver
    with serving_trigger(url, env) as (base, log):
        assert post(f"{base}/backups/langfuse")[0] == 401
        assert post(f"{base}/backups/langfuse", "wrong-secret-of-some-length")[0] == 401
        assert post(f"{base}/backups/nope")[0] == 401  # no secret, no list of databases
        status, body = post(f"{base}/backups/nope", TRIGGER_SECRET)
        assert status == 404 and "configured databases: agentic, langfuse" in body["error"]
        assert post(f"{base}/backups/langfuse", method="GET")[0] == 405

        status, body = post(f"{base}/backups/langfuse", TRIGGER_SECRET)
        assert status == 202, body
        assert body["database"] == "langfuse" and body["partition"] == today()
        final = wait_for_run(Deployment(url), body["run_id"], timeout_seconds=300)
        assert final.value == "SUCCESS"
    assert "POST /backups/langfuse" in log[0]
    assert TRIGGER_SECRET not in log[0]


def test_http_trigger_makes_a_restore_point_once_and_answers_when_it_is_archived(webserver):
    url, env, home = webserver
    name = f"release-{uuid.uuid4().hex[:6]}"
    with serving_trigger(url, env) as (base, log):
        points = f"{base}/restore-points"
        assert post(f"{points}/main", body={"name": name})[0] == 401
        status, answer = post(f"{points}/agentic", TRIGGER_SECRET, body={"name": name})
        assert status == 404 and "configured servers: main" in answer["error"]
        status, answer = post(f"{points}/main", TRIGGER_SECRET, body={"name": ""})
        assert status == 400 and "needs a name" in answer["error"]

        status, answer = post(f"{points}/main", TRIGGER_SECRET, body={"name": name, "note": "v7"})
        assert status == 201, answer
        assert answer["archived"] is True and answer["name"] == name
        with deployment_instance(env, home) as instance:
            recorded = [p for p in recorded_restore_points(instance, "main") if p.name == name]
        assert [(p.note, p.requested_by[:25]) for p in recorded] == [
            ("v7", "submitted by HTTP trigger")
        ]
        status, answer = post(f"{points}/main", TRIGGER_SECRET, body={"name": name})
        assert status == 409 and answer["run_url"].endswith(answer["run_id"])
    assert TRIGGER_SECRET not in log[0]


def test_the_trigger_refuses_to_start_without_a_strong_secret(write_config):
    write_config()
    env = {k: v for k, v in os.environ.items() if k != "BACKUP_PIPELINES_TRIGGER_SECRET"}
    done = cli("serve-trigger", "--port", str(free_port()), env=env)
    assert done.returncode == 2
    assert "set BACKUP_PIPELINES_TRIGGER_SECRET to a random secret" in done.stderr


BUSY_RUN = "0" * 8 + "-busy-" + "0" * 8  # another run holding the server's only dump slot


def test_a_run_queued_before_midnight_backs_up_the_day_it_asked_for(webserver):
    """A run asking for yesterday's backup, submitted at 23:59:55 yesterday (simulated: its
    record's creation time is moved back there) and held behind a busy pool until now, after
    midnight: it takes yesterday's backup now, and the manifest says when it was asked for."""
    url, env, home = webserver
    day = yesterday()
    asked_at = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(23, 59, 55))
    pool = database_dump_pool("agentic", load_config(Path(env["BACKUP_PIPELINES_CONFIG"])))
    deployment = Deployment(url)
    with deployment_instance(env, home) as instance:
        slots = instance.event_log_storage
        slots.set_concurrency_slots(pool, 1)
        slots.claim_concurrency_slot(pool, BUSY_RUN, "another_dump")
        try:
            selector = _backup_selector(deployment, _DATABASE_BACKUP, "agentic")
            run_id = submit_run(deployment, selector, "test", partition=day, what="agentic")
            with psycopg.connect(deployment_database_url(env), autocommit=True) as conn:
                conn.execute(
                    "UPDATE runs SET create_timestamp = %s WHERE run_id = %s", (asked_at, run_id)
                )
            time.sleep(8)  # the daemon has dequeued it by now; the pool holds its dump back
            assert run_status(deployment, run_id) in (
                DagsterRunStatus.QUEUED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
            )
        finally:
            slots.free_concurrency_slots_for_run(BUSY_RUN)
            slots.set_concurrency_slots(pool, 2)
    assert wait_for_run(deployment, run_id, 300) == DagsterRunStatus.SUCCESS
    manifest = json.loads(
        (home.parent / "backups" / "archive" / "agentic" / day / "manifest.json").read_text()
    )
    assert manifest["partition"] == day
    assert manifest["snapshot_taken_at"][:10] == today() != day
    assert dt.datetime.fromisoformat(manifest["submitted_at"]) == asked_at.replace(tzinfo=dt.UTC)
    assert manifest["start_delay_seconds"] > 5


@contextlib.contextmanager
def deployment_instance(env: dict[str, str], home: Path) -> Iterator[DagsterInstance]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HOST", "PORT", "USER", "PASSWORD", "DB"):
            patch.setenv(f"DAGSTER_PG_{name}", env[f"DAGSTER_PG_{name}"])
        instance = DagsterInstance.from_config(str(home))
        try:
            yield instance
        finally:
            instance.dispose()


def deployment_database_url(env: dict[str, str]) -> str:
    return make_conninfo(
        host=env["DAGSTER_PG_HOST"],
        port=env["DAGSTER_PG_PORT"],
        user=env["DAGSTER_PG_USER"],
        password=env["DAGSTER_PG_PASSWORD"],
        dbname=env["DAGSTER_PG_DB"],
    )


def test_an_export_requested_over_http_is_downloaded_whole_and_verified(
    webserver, cluster, tmp_path
):
    url, env, home = webserver
    body = {
        "database": "agentic",
        "tables": [{"table": "public.conversations", "where": "agent_id = :agent"}],
        "params": {"agent": {"type": "int", "value": 7}},
        "follow_parents": True,
        "reason": "customer 7 asked for their data",
    }
    with serving_trigger(url, env) as (base, log):
        assert post(f"{base}/exports", body=body)[0] == 401
        wrong = {**body, "params": {"agent": {"type": "int", "value": "seven"}}}
        status, answer = post(f"{base}/exports", TRIGGER_SECRET, body=wrong)
        assert status == 400 and "'agent' is declared int" in answer["error"]
        status, answer = post(f"{base}/exports", TRIGGER_SECRET, body={**body, "database": "x"})
        assert status == 404

        status, answer = post(f"{base}/exports", TRIGGER_SECRET, body=body)
        assert status == 202, answer
        export_id = answer["id"]
        assert export_id.startswith("agentic-") and answer["run_url"].endswith(answer["run_id"])
        assert wait_for_run(Deployment(url), answer["run_id"], 300).value == "SUCCESS"
        status, state = post(f"{base}/exports/{export_id}", TRIGGER_SECRET, method="GET")
        assert status == 200 and state["status"] == "SUCCESS", state
        download = f"{base}{state['download_url']}"

        # A client that goes away after a few bytes has no ZIP; the stored export is intact.
        with _opened(download) as partial:
            assert int(partial.headers["Content-Length"]) > 100
            start = partial.read(100)
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(start))
        with _opened(download) as whole:
            archive = zipfile.ZipFile(io.BytesIO(whole.read()))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["reason"] == "customer 7 asked for their data"
    assert manifest["requested_by"].startswith("HTTP trigger from")
    with psycopg.connect(cluster.url("agentic")) as conn:
        (expected,) = conn.execute(
            "SELECT count(*) FROM conversations WHERE agent_id = 7"
        ).fetchone()
    rows = {f["name"]: f["rows"] for f in manifest["files"]}
    assert (
        rows["tables/public.conversations.csv"] == expected
        and rows["tables/public.agents.csv"] == 1
    )
    conversations = archive.read("tables/public.conversations.csv").decode().splitlines()
    assert len(conversations) == expected + 1  # and the header
    assert TRIGGER_SECRET not in log[0]

    request = tmp_path / "request.yaml"
    request.write_text(yaml.safe_dump({"queries": [{"name": "q", "sql": "DELETE FROM messages"}]}))
    refused = cli("--url", url, "export", "agentic", "--request", str(request), env=env)
    assert refused.returncode == 2 and "is not one read-only statement" in refused.stderr
    request.write_text(yaml.safe_dump({"queries": [{"name": "agents", "sql": "TABLE agents"}]}))
    done = cli("--url", url, "export", "agentic", "--request", str(request), "--wait", env=env)
    assert done.returncode == 0, done.stderr
    (submitted, status) = done.stdout.splitlines()
    export_id, _ = submitted.split()
    assert status == "SUCCESS"
    stored = home.parent / "backups" / "dumps" / "exports" / "agentic" / f"{export_id}.zip"
    by_cli = json.loads(zipfile.ZipFile(stored).read("manifest.json"))
    assert by_cli["requested_by"].startswith("backup-pipelines CLI (")
    assert by_cli["files"][0]["name"] == "queries/agents.csv" and by_cli["files"][0]["rows"] > 0

    # An export named by whoever made it (the launchpad takes any partition name) is found by
    # its run's asset, not by its name.
    named, run_id = submit_export(
        Deployment(url), "agentic", {"tables": [{"table": "public.agents"}]}, "test", "audit-q4"
    )
    assert wait_for_run(Deployment(url), run_id, 300).value == "SUCCESS"
    with serving_trigger(url, env) as (base, _), _opened(f"{base}/exports/{named}/download") as got:
        assert zipfile.ZipFile(io.BytesIO(got.read())).namelist()[0] == "tables/public.agents.csv"


@contextlib.contextmanager
def _opened(url: str) -> Iterator:
    request = urllib.request.Request(url)
    request.add_header("X-Backup-Pipelines-Secret", TRIGGER_SECRET)
    with urllib.request.urlopen(request, timeout=120) as response:
        yield response
