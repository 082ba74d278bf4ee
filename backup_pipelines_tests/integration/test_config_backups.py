"""Configuration backups with real files, a real command, a real HTTP server and the session's
PostgreSQL server: versions and diffs, unchanged days, readback, restore, and bad sources."""

import datetime as dt
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, materialize

from backup_pipelines import names
from backup_pipelines.core.common.config import (
    DEFAULT_REDACTIONS,
    RetentionRules,
    load_config,
    server_config_source,
)
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.core.configs.changes import Redactor
from backup_pipelines.core.configs.snapshots import (
    ConfigManifest,
    config_days,
    read_config_manifest,
    take_config_snapshot,
    verify_config_snapshot,
)
from backup_pipelines.core.configs.sources import collect
from backup_pipelines.core.recovery.config_runbook import (
    config_restore_commands,
    config_runbook_entry,
    config_section,
)
from backup_pipelines.core.retention.prune import delete_objects, plan_configs
from backup_pipelines.defs.alerts.health import check_problems, config_age_problems
from backup_pipelines_tests.support.age_keys import AGE_MAGIC, new_identity
from backup_pipelines_tests.support.config import PITR_PASSWORD_ENV, server_document, today
from backup_pipelines_tests.support.runs import definitions_for, failure_messages

APP_SECRET = "Cfg-3vX8-never-print-me"  # in the application's settings file
HTTP_TOKEN = "Tok-9qR2-never-print-me"  # the export endpoint's bearer token
COMMAND_SECRET = "Cmd-5tY7-never-print-me"  # given to the command through env:
SERVER = "main"
SERVER_SOURCE = server_config_source(SERVER)
EXPORT = "[flags]\nnew_checkout = true\n[limits]\nmax_upload_mb = 50\n"


class _Exports(http.server.BaseHTTPRequestHandler):
    """/export wants the bearer token; /broken answers 500; /huge answers 2 MiB."""

    def do_GET(self) -> None:
        if self.path == "/broken":
            self.send_error(500, "export failed")
            return
        if self.path == "/huge":
            body = b"x" * (2 * 1024 * 1024)
        elif self.headers.get("Authorization") != f"Bearer {HTTP_TOKEN}":
            self.send_error(401)
            return
        else:
            body = EXPORT.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def export_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exports)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "etc" / "shop"
    folder.mkdir(parents=True)
    (folder / "app.ini").write_text(
        f"[database]\nhost = db.internal\nport = 5432\npassword = {APP_SECRET}\n"
    )
    (folder / "app.ini").chmod(0o640)
    (folder / "conf.d").mkdir()
    (folder / "conf.d" / "cache.conf").write_text("[cache]\nttl = 60\n")
    return folder


def _command(tmp_path: Path) -> list[str]:
    script = tmp_path / "export_settings.py"
    script.write_text(
        "import os\n"
        "assert os.environ['SHOP_SECRET']\n"
        "print('[payments]\\nprovider = acme\\n[mail]\\nrelay = smtp.internal')\n"
    )
    return [sys.executable, str(script)]


@pytest.fixture
def configured(write_config, cluster, tmp_path, app_folder, export_server, monkeypatch):
    monkeypatch.setenv(PITR_PASSWORD_ENV, cluster.superuser_password)
    monkeypatch.setenv("SHOP_EXPORT_TOKEN", HTTP_TOKEN)
    monkeypatch.setenv("SHOP_COMMAND_SECRET", COMMAND_SECRET)
    path = write_config(
        servers=server_document(cluster, {"path": str(tmp_path / "repository")}, SERVER),
        configs={
            "shop_files": {
                "files": [str(app_folder / "app.ini"), str(app_folder / "conf.d" / "*.conf")],
                "expect": [r"^\[database\]", r"^\[cache\]"],
            },
            "shop_settings": {
                "command": {
                    "argv": _command(tmp_path),
                    "env": {"SHOP_SECRET": "${SHOP_COMMAND_SECRET}"},
                },
                "expect": [r"^\[payments\]"],
            },
            "shop_flags": {
                "http": {
                    "url": f"{export_server}/export",
                    "headers": {"Authorization": "Bearer ${SHOP_EXPORT_TOKEN}"},
                },
                "expect": [r"^\[flags\]"],
            },
        },
    )
    return path


def _materialize(config: Path, instance: DagsterInstance, *sources: str):
    defs = definitions_for(config)
    return materialize(
        list(defs.assets or []),
        selection=[names.config_key(source) for source in sources],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def _restore(config: Path, instance: DagsterInstance, source: str, target: Path):
    """The restore_config job, launched as from the launchpad."""
    defs = definitions_for(config)
    request = {"name": source, "target_dir": str(target)}
    return defs.resolve_job_def(names.RESTORE_CONFIG_JOB).execute_in_process(
        run_config={"ops": {"restore_config_version": {"config": request}}},
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def _metadata(result, source: str) -> dict:
    (event,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == names.config_key(source)
    ]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def _checks(result, source: str) -> dict[str, bool]:
    return {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == names.config_key(source)
    }


def _manifest(config: Path, source: str) -> ConfigManifest:
    store = stores_from_config(load_config(config)).archive
    manifest = read_config_manifest(store, source, today())
    assert manifest is not None
    return manifest


def _everything_recorded(instance: DagsterInstance) -> str:
    runs = instance.get_runs()
    return "\n".join(
        json.dumps(str(record)) for run in runs for record in instance.all_logs(run.run_id)
    )


def test_versions_diffs_unchanged_days_restore_and_no_secret_shown(
    configured, instance, cluster, app_folder, tmp_path
):
    sources = ("shop_files", "shop_settings", "shop_flags", SERVER_SOURCE)
    first = _materialize(configured, instance, *sources)
    assert first.success, failure_messages(first)
    for source in sources:
        assert _checks(first, source) == {
            names.CONFIG_COMPLETE: True,
            names.CONFIG_READBACK: True,
        }, source
    server_files = [f["path"] for f in _manifest(configured, SERVER_SOURCE).files]
    data_dir = str(cluster.data_dir).lstrip("/")
    assert f"{data_dir}/postgresql.conf" in server_files
    assert f"{data_dir}/pg_hba.conf" in server_files
    assert f"{data_dir}/postgresql.auto.conf" in server_files
    shop = _manifest(configured, "shop_files")
    (app_ini,) = [f for f in shop.files if f["path"].endswith("app.ini")]
    assert app_ini["mode"] == "0640"

    # A setting changes in the application's file and on the server: new versions with diffs.
    ini = app_folder / "app.ini"
    ini.write_text(ini.read_text().replace("port = 5432", "port = 6432"))
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET work_mem = '24MB'")
    try:
        second = _materialize(configured, instance, "shop_files", SERVER_SOURCE)
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET work_mem")
    assert second.success, failure_messages(second)
    shown = _metadata(second, "shop_files")
    assert shown["changes"] == "1 changed"
    assert "-port = 5432" in shown["diff"] and "+port = 6432" in shown["diff"]
    assert "password = [REDACTED]" in shown["diff"]
    server_shown = _metadata(second, SERVER_SOURCE)
    assert "postgresql.auto.conf" in server_shown["changed"]
    assert "+work_mem = '24MB'" in server_shown["diff"]
    changed = _manifest(configured, "shop_files")
    assert not changed.unchanged and changed.object_key != shop.object_key

    # Nothing changed: recorded as unchanged, the archive named again, not stored again.
    third = _materialize(configured, instance, "shop_files")
    assert third.success, failure_messages(third)
    assert _metadata(third, "shop_files")["changes"] == "nothing changed"
    same = _manifest(configured, "shop_files")
    assert same.unchanged and same.object_key == changed.object_key

    # Restore by job into a folder: every byte and mode as it was.
    target = tmp_path / "restored"
    assert _restore(configured, instance, "shop_files", target).success
    for original in (ini, app_folder / "conf.d" / "cache.conf"):
        copy = target / str(original).lstrip("/")
        assert copy.read_bytes() == original.read_bytes()
        assert copy.stat().st_mode == original.stat().st_mode
    again = _restore(configured, instance, "shop_files", target)
    assert not again.success and "files exist under" in failure_messages(again)

    # By hand, with the runbook's commands: the store's CLI (cp here), sha256sum, zstd, tar.
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    store = stores_from_config(load_config(configured)).archive
    entry = config_runbook_entry(store, "shop_files")
    assert entry.manifest is not None and entry.manifest.object_key == same.object_key
    subprocess.run(
        ["bash", "-c", config_restore_commands(entry)], cwd=by_hand, check=True, capture_output=True
    )
    restored_ini = by_hand / "restored-config" / "shop_files" / str(ini).lstrip("/")
    assert restored_ini.read_bytes() == ini.read_bytes()
    assert restored_ini.stat().st_mode == ini.stat().st_mode
    assert "restored-config/shop_files" in config_section([entry])

    events = _everything_recorded(instance)
    for secret in (APP_SECRET, HTTP_TOKEN, COMMAND_SECRET, cluster.superuser_password):
        assert secret not in events


def test_readback_catches_a_damaged_archive_and_the_next_run_stores_it_again(configured, instance):
    first = _materialize(configured, instance, "shop_settings")
    assert first.success, failure_messages(first)
    manifest = _manifest(configured, "shop_settings")
    store = stores_from_config(load_config(configured)).archive
    path = Path(store.uri(manifest.object_key).removeprefix("file://"))
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    outcome = verify_config_snapshot(store, manifest, None)
    assert not outcome.passed and "SHA-256" in outcome.description

    # The decoders' own verdict: the damaged bytes, with a manifest that agrees with them.
    agreeing = ConfigManifest(
        **{
            **manifest.__dict__,
            "sha256": hashlib.sha256(damaged).hexdigest(),
        }
    )
    decoded = verify_config_snapshot(store, agreeing, None)
    assert not decoded.passed and "zstd failed" in decoded.description

    healed = _materialize(configured, instance, "shop_settings")
    assert healed.success, failure_messages(healed)
    assert "failed its readback" in _metadata(healed, "shop_settings")["notes"]
    assert _checks(healed, "shop_settings")[names.CONFIG_READBACK]
    assert not _manifest(configured, "shop_settings").unchanged


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"files": ["/nonexistent/shop/app.ini"]}, "/nonexistent/shop/app.ini does not exist"),
        (
            {"command": {"argv": [sys.executable, "-c", "import sys; sys.exit(3)"]}},
            "exited with status 3",
        ),
        (
            {
                "command": {
                    "argv": [sys.executable, "-c", "import time; time.sleep(30)"],
                    "timeout_seconds": 1,
                }
            },
            "timed out after 1 s",
        ),
        ({"http": {"url": "{server}/broken"}}, "answered HTTP 500"),
        ({"http": {"url": "{server}/huge", "max_bytes": 1024}}, "more than max_bytes"),
    ],
    ids=["missing_file", "command_fails", "command_hangs", "http_500", "http_oversize"],
)
def test_a_source_that_cannot_be_read_fails_and_stores_nothing(
    write_config, instance, export_server, source, expected
):
    if "http" in source:
        source["http"]["url"] = source["http"]["url"].format(server=export_server)
    config = write_config(configs={"broken": source})
    result = _materialize(config, instance, "broken")
    assert not result.success
    message = failure_messages(result)
    assert "config 'broken'" in message and expected in message
    store = stores_from_config(load_config(config)).archive
    assert list(store.list_keys("config-snapshots/")) == []
    assert not os.path.exists(str(config.parent / "backups" / "archive" / "config-snapshots"))


def test_retention_keeps_every_archive_a_kept_day_names(write_config, tmp_path):
    """Four days: stored, unchanged, changed, unchanged. Pruning to the newest day keeps the
    archive it names (stored the day before) and deletes the rest; the kept day still reads
    back whole."""
    settings_file = tmp_path / "app.ini"
    config = load_config(write_config(configs={"app": {"files": [str(settings_file)]}}))
    store = stores_from_config(config).archive
    days = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    texts = ["port = 1\n", "port = 1\n", "port = 2\n", "port = 2\n"]
    for day, text in zip(days, texts, strict=True):
        settings_file.write_text(text)
        with tempfile.TemporaryDirectory() as folder:
            take_config_snapshot(
                store,
                collect(config, "app", Path(folder)),
                day,
                dt.datetime.fromisoformat(f"{day}T12:00:00+00:00"),
                key=None,
                expect=[],
                redactor=Redactor(DEFAULT_REDACTIONS),
            )
    manifests = {day: read_config_manifest(store, "app", day) for day in days}
    assert [m.unchanged for m in manifests.values()] == [False, True, False, True]
    rules = RetentionRules(daily=1, weekly=0, monthly=0, min_keep=1)
    plan = plan_configs(store, "app", rules, dict.fromkeys(days, True), dt.date(2026, 11, 4))
    assert list(plan.kept) == ["2026-11-04"]
    deleted = {key for deletion in plan.deletions for _, key in deletion.objects}
    assert manifests["2026-11-03"].object_key not in deleted  # day 4 names it
    assert manifests["2026-11-01"].object_key in deleted
    for deletion in plan.deletions:
        delete_objects(stores_from_config(config), deletion)
    assert config_days(store, "app") == ["2026-11-04"]
    assert verify_config_snapshot(store, manifests["2026-11-04"], None).passed
    assert sorted(store.list_keys("config-snapshots/")) == sorted(
        [manifests["2026-11-03"].object_key, "config-snapshots/app/2026-11-04/manifest.json"]
    )


def test_a_missing_section_fails_config_complete_and_is_alerted_like_a_stale_source(
    write_config, instance, app_folder
):
    config = write_config(
        configs={
            "shop": {"files": [str(app_folder / "app.ini")], "expect": [r"^\[payments\]"]},
            "never_run": {"files": [str(app_folder / "app.ini")]},
        }
    )
    result = _materialize(config, instance, "shop")
    assert not result.success  # the checks are blocking: the run fails too, and is alerted
    assert _metadata(result, "shop")["files"] == "1"
    assert _checks(result, "shop") == {names.CONFIG_COMPLETE: False, names.CONFIG_READBACK: True}
    (failed,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == names.CONFIG_COMPLETE
    ]
    assert "expected '^\\\\[payments\\\\]': found in no delivered file" in failed.description
    problems = check_problems(instance, [], [], "http://ui", configs=["shop", "never_run"])
    assert [p.key for p in problems] == ["check:config/shop:config_complete"]
    now = dt.datetime.now(dt.UTC)
    stale = config_age_problems(
        instance,
        ["shop", "never_run"],
        now=now,
        watching_since=now - dt.timedelta(days=2),
        freshness=dt.timedelta(hours=25),
        ui="http://ui",
    )
    assert [p.key for p in stale] == ["config_stale:never_run"]


def test_an_encrypted_snapshot_reads_back_and_restores_by_hand_with_the_identity_file(
    write_config, instance, app_folder, tmp_path, monkeypatch
):
    identity = new_identity(tmp_path, "configs")
    monkeypatch.setenv("TEST_AGE_IDENTITY", identity)
    config = write_config(
        configs={"shop": {"files": [str(app_folder / "app.ini")]}},
        encryption={"identity": "${TEST_AGE_IDENTITY}"},
    )
    result = _materialize(config, instance, "shop")
    assert result.success, failure_messages(result)
    assert _checks(result, "shop")[names.CONFIG_READBACK]
    store = stores_from_config(load_config(config)).archive
    entry = config_runbook_entry(store, "shop")
    assert entry.manifest is not None and entry.manifest.object_key.endswith(".tar.zst.age")
    assert store.read_bytes(entry.manifest.object_key).startswith(AGE_MAGIC)
    assert b"hunter" not in store.read_bytes(entry.manifest.object_key)
    key_file = tmp_path / "identity.txt"
    key_file.write_text(identity + "\n")
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    subprocess.run(
        ["bash", "-c", config_restore_commands(entry)],
        cwd=by_hand,
        check=True,
        capture_output=True,
        env={**os.environ, "AGE_IDENTITY_FILE": str(key_file)},
    )
    ini = app_folder / "app.ini"
    assert (by_hand / "restored-config" / "shop" / str(ini).lstrip("/")).read_bytes() == (
        ini.read_bytes()
    )
    monkeypatch.delenv("TEST_AGE_IDENTITY")
    unreadable = verify_config_snapshot(store, entry.manifest, None)
    assert not unreadable.passed and "encrypted with age" in unreadable.description


def test_a_servers_files_read_through_postgresql_are_the_files_on_disk(
    write_config, cluster, tmp_path, monkeypatch
):
    """With pgbackrest_server the worker has no access to the host's files: they are read
    through the server's connection, byte for byte the same."""
    monkeypatch.setenv(PITR_PASSWORD_ENV, cluster.superuser_password)
    servers = server_document(cluster, {"path": str(tmp_path / "repository")}, SERVER)
    servers[SERVER]["pgbackrest_server"] = {
        "host": "db-host",
        "ca_file": "ca.crt",
        "cert_file": "client.crt",
        "key_file": "client.key",
    }
    config = load_config(write_config(servers=servers))
    with tempfile.TemporaryDirectory() as folder:
        collection = collect(config, SERVER_SOURCE, Path(folder))
        data_dir = str(cluster.data_dir).lstrip("/")
        assert {f.path for f in collection.files} >= {
            f"{data_dir}/postgresql.conf",
            f"{data_dir}/pg_hba.conf",
            f"{data_dir}/postgresql.auto.conf",
        }
        for position, item in enumerate(collection.files):
            on_disk = Path("/" + item.path).read_bytes()
            assert collection.staged(position).read_bytes() == on_disk, item.path
            assert item.sha256 == hashlib.sha256(on_disk).hexdigest()
            assert item.mode is None and item.owner is None  # PostgreSQL does not say
