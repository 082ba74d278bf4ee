"""Alerts: real receivers (an HTTP server for the webhook and Slack's API, an SMTP server with
STARTTLS), real failures, de-duplication across ticks, recovery, and a notifier that is down."""

import datetime as dt
import hashlib
import hmac
import json
import threading
import urllib.parse
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from dagster import AssetKey, materialize

from backup_pipelines import names
from backup_pipelines.defs.alerts.notifiers import SIGNATURE_HEADER
from backup_pipelines.defs.alerts.state import AlertState
from backup_pipelines_demo.cluster import free_port
from backup_pipelines_tests.support.certificates import make_certificates
from backup_pipelines_tests.support.config import BACKUP_PASSWORD
from backup_pipelines_tests.support.runs import (
    alerts_tick,
    definitions_for,
    run_backup,
    run_restore_test_job,
    watching_since,
)

WEBHOOK_SECRET = "whk-9Zq-never-print-me"
SLACK_TOKEN = "xoxb-test-never-print-me"


class Receiver(ThreadingHTTPServer):
    """Records POSTs to /hook (the webhook) and /api/chat.postMessage (Slack's API)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict, bytes]] = []
        self.failing = False
        super().__init__(("127.0.0.1", 0), self._handler())

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if server.failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                server.posts.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args) -> None:
                pass

        return Handler

    def webhooks(self) -> list[dict]:
        return [json.loads(body) for path, _, body in self.posts if path == "/hook"]

    def slack_texts(self) -> list[str]:
        texts = []
        for path, headers, body in self.posts:
            if path.endswith("chat.postMessage"):
                if "json" in headers.get("Content-Type", ""):
                    texts.append(json.loads(body)["text"])
                else:
                    texts.append(urllib.parse.parse_qs(body.decode())["text"][0])
        return texts


class Mailbox:
    def __init__(self) -> None:
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    import ssl

    # The same certificates as compose's: a CA and a server certificate for 127.0.0.1.
    certificates = make_certificates(tmp_path_factory.mktemp("tls") / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "s3.crt", certificates / "s3.key")
    mailbox = Mailbox()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True
    )
    controller.start()
    yield controller, mailbox, certificates / "ca.crt"
    controller.stop()


@pytest.fixture
def alerting(write_config, receiver, smtp, monkeypatch, tmp_path):
    controller, mailbox, ca_file = smtp
    receiver.posts.clear()
    receiver.failing = False
    mailbox.messages.clear()
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("TEST_SLACK_TOKEN", SLACK_TOKEN)
    base = f"http://127.0.0.1:{receiver.server_address[1]}"
    alerts = {
        "ui_base_url": "http://dagster.example:3000",
        "webhook": {"url": f"{base}/hook", "secret": "${TEST_WEBHOOK_SECRET}"},
        "slack": {
            "token": "${TEST_SLACK_TOKEN}",
            "channel": "#backups",
            "base_url": f"{base}/api/",
        },
        "email": {
            "host": "127.0.0.1",
            "port": controller.port,
            "ca_file": str(ca_file),
            "sender": "backups@example.org",
            "to": ["dba@example.org"],
        },
        "metrics_textfile": str(tmp_path / "textfile" / "backup_pipelines.prom"),
    }

    def configure(**changes):
        return write_config(alerts=alerts, **changes)

    return configure


def test_a_failed_run_reaches_every_notifier_once(alerting, receiver, smtp, instance, monkeypatch):
    defs = definitions_for(alerting())
    cursor = alerts_tick(defs, instance)
    monkeypatch.setenv("TEST_BACKUP_PASSWORD", "wrong-password")
    result = run_backup(defs, instance, databases=("agentic",))
    assert not result.success

    cursor = alerts_tick(defs, instance, cursor)
    (hook,) = [m for m in receiver.webhooks() if m["key"].startswith("run:")]
    assert hook["kind"] == "problem"
    assert "failed" in hook["title"] and "(agentic)" in hook["title"]
    # An ad-hoc materialization is named by its assets, not by Dagster's internal job name.
    assert "postgres/agentic/dump" in hook["title"] and "__" not in hook["title"]
    assert "postgres__agentic__backup: " in hook["details"]
    assert "password authentication failed" in hook["details"]
    assert hook["link"] == f"http://dagster.example:3000/runs/{result.run_id}"
    _path, headers, body = next(p for p in receiver.posts if p[0] == "/hook")
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert any("PROBLEM: run of" in text for text in receiver.slack_texts())
    _, mailbox, _ = smtp
    assert any("PROBLEM: run of" in m["Subject"] for m in mailbox.messages)

    posts = len(receiver.posts)
    alerts_tick(defs, instance, cursor)  # the same failure is not announced again
    assert len(receiver.posts) == posts
    everything = b"".join(body for _, _, body in receiver.posts).decode()
    for secret in (BACKUP_PASSWORD, WEBHOOK_SECRET, SLACK_TOKEN, "wrong-password"):
        assert secret not in everything


def test_failed_check_in_a_successful_run_then_recovery(alerting, receiver, instance):
    config = alerting(storage={"local": {"path": "./backups"}, "capacity_gb": 0.00001})
    defs = definitions_for(config)
    assert run_backup(defs, instance).success
    usage = [AssetKey(["storage_usage"])]
    run = materialize(
        list(defs.assets), selection=usage, instance=instance, resources=defs.resources
    )
    assert run.success  # the failed capacity check does not fail the run
    cursor = alerts_tick(defs, instance)
    cursor = alerts_tick(defs, instance, cursor)  # a second tick: still one alert
    capacity = [m for m in receiver.webhooks() if names.STORAGE_CAPACITY in m["key"]]
    assert [m["kind"] for m in capacity] == ["problem"]
    assert "storage: check storage_capacity failed (ERROR)" in capacity[0]["title"]
    assert capacity[0]["link"] == "http://dagster.example:3000/assets/storage_usage"

    defs = definitions_for(alerting(storage={"local": {"path": "./backups"}, "capacity_gb": 100}))
    assert materialize(
        list(defs.assets), selection=usage, instance=instance, resources=defs.resources
    ).success
    alerts_tick(defs, instance, cursor)
    capacity = [m for m in receiver.webhooks() if names.STORAGE_CAPACITY in m["key"]]
    assert [m["kind"] for m in capacity] == ["problem", "recovered"]
    assert any("RECOVERED: storage: check storage_capacity" in t for t in receiver.slack_texts())


def test_freshness_alert_when_nothing_ran_at_all(alerting, receiver, instance):
    defs = definitions_for(alerting())
    alerts_tick(defs, instance, watching_since(26))  # watching for 26 h, no backup ever
    stale = {m["key"]: m for m in receiver.webhooks() if m["key"].startswith("stale:")}
    assert set(stale) == {"stale:agentic", "stale:langfuse"}
    assert "no verified backup for 26.0 h (limit 25.0 h)" in stale["stale:agentic"]["title"]
    assert names.DAILY_BACKUP_SCHEDULE in stale["stale:agentic"]["details"]
    overdue = [m for m in receiver.webhooks() if m["key"].startswith("restore_test_overdue")]
    assert overdue == []  # 26 h is within the 8 days allowed for restore tests
    alerts_tick(defs, instance, watching_since(24 * 9))
    overdue = [m for m in receiver.webhooks() if m["key"].startswith("restore_test_overdue")]
    assert len(overdue) == 2


def test_a_notifier_that_is_down_is_retried_and_never_breaks_the_sensor(
    alerting, receiver, instance
):
    defs = definitions_for(alerting())
    receiver.failing = True  # webhook and Slack answer 503; email still works
    cursor = alerts_tick(defs, instance, watching_since(26))
    state = AlertState(**json.loads(cursor))
    assert state.outbox and all(set(m["pending"]) == {"webhook", "slack"} for m in state.outbox)
    assert receiver.webhooks() == []
    receiver.failing = False
    cursor = alerts_tick(defs, instance, cursor)
    assert AlertState(**json.loads(cursor)).outbox == []
    assert {m["key"] for m in receiver.webhooks()} == {"stale:agentic", "stale:langfuse"}


def test_metrics_textfile_after_a_backup_and_a_restore_test(alerting, instance, tmp_path):
    defs = definitions_for(alerting())
    assert run_backup(defs, instance).success
    assert run_restore_test_job(defs, instance, databases=["agentic"]).success
    alerts_tick(defs, instance)
    text = (tmp_path / "textfile" / "backup_pipelines.prom").read_text()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    now = dt.datetime.now(dt.UTC).timestamp()
    last = float(lines['backup_pipelines_last_success_timestamp_seconds{database="agentic"}'])
    assert now - 120 < last <= now
    assert float(lines['backup_pipelines_last_backup_size_bytes{database="langfuse"}']) > 0
    assert float(lines['backup_pipelines_last_backup_duration_seconds{database="agentic"}']) > 0
    assert lines['backup_pipelines_last_restore_test_success{database="agentic"}'] == "1"
    assert (
        float(lines['backup_pipelines_last_restore_test_duration_seconds{database="agentic"}']) > 0
    )
    assert 'backup_pipelines_last_restore_test_success{database="langfuse"}' not in lines
    assert lines["backup_pipelines_open_problems"] == "0"
    assert "# TYPE backup_pipelines_storage_bytes gauge" in text
