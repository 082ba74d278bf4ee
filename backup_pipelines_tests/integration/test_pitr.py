"""Point-in-time recovery with pgBackRest against a real archiving PostgreSQL server and a local
repository: base backups through Dagster, restores to a moment proven row by row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from dagster import DagsterInstance, Definitions, materialize
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import wait_until_archived
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.markers import MARKER_TABLE
from backup_pipelines.core.servers.pgbackrest import PgBackRestError, RepositoryInfo
from backup_pipelines.core.servers.pitr_test import target_time
from backup_pipelines.core.servers.scratch import (
    ScratchPlace,
    free_port,
    restored_copy,
    server_binaries,
    stop_copy,
)
from backup_pipelines.defs.alerts.state import AlertState
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster
from backup_pipelines_tests.support.archiving import https_s3_repository, start_archiving
from backup_pipelines_tests.support.certificates import make_certificates
from backup_pipelines_tests.support.config import (
    PITR_PASSWORD_ENV,
    config_document,
    server_document,
    today,
)
from backup_pipelines_tests.support.folders import shared_folder
from backup_pipelines_tests.support.processes import CommandLineWatch
from backup_pipelines_tests.support.runbook_html import RunbookParser
from backup_pipelines_tests.support.runs import (
    alerts_tick,
    check_evaluations,
    definitions_for,
    failure_messages,
    materialize_runbook,
    watching_since,
)

SERVER = "main"
PASSWORD_ENV = PITR_PASSWORD_ENV


@pytest.fixture(scope="module")
def pitr_home() -> Iterator[Path]:
    with shared_folder("pitr") as home:
        yield home


@pytest.fixture(scope="module")
def archiving(pitr_home: Path, cluster: LocalCluster) -> Iterator[tuple[LocalCluster, Path]]:
    """A second server archiving into a local pgBackRest repository; the config file for it."""
    password = uuid.uuid4().hex
    server = LocalCluster(pitr_home / "server", free_port(), password)
    server.init()
    config_path = pitr_home / "backup_pipelines.yaml"
    document = config_document(
        cluster,
        {"local": {"path": str(pitr_home / "backups")}},
        servers=server_document(server, {"path": str(pitr_home / "repository")}),
    )
    config_path.write_text(yaml.safe_dump(document))
    start_archiving(server, config_path)
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id serial PRIMARY KEY, phase text NOT NULL)")
    try:
        yield server, config_path
    finally:
        server.destroy()


@pytest.fixture
def env(archiving, monkeypatch) -> Path:
    server, config_path = archiving
    monkeypatch.setenv(PASSWORD_ENV, server.superuser_password)
    monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(config_path))
    return config_path


def own_server(
    monkeypatch: pytest.MonkeyPatch,
    pitr_home: Path,
    cluster: LocalCluster,
    name: str,
    repository: dict,
    **server: object,
) -> tuple[LocalCluster, Path]:
    """A fresh cluster of a test's own (initialized, not started) and its configuration file;
    its superuser password is in the environment (PITR_PASSWORD_ENV) for the test's duration."""
    instance = LocalCluster(pitr_home / name, free_port(), uuid.uuid4().hex)
    instance.init()
    servers = server_document(instance, repository)
    servers[SERVER].update(server)
    document = config_document(
        cluster, {"local": {"path": str(pitr_home / f"{name}-backups")}}, servers=servers
    )
    config = pitr_home / f"{name}.yaml"
    config.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(PASSWORD_ENV, instance.superuser_password)
    return instance, config


def write_rows(server: LocalCluster, phase: str, count: int = 3) -> dt.datetime:
    """Commit `count` rows of `phase`; returns the server's clock just after the commit."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger (phase) SELECT %s FROM generate_series(1, %s)", (phase, count)
        )
        moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    time.sleep(0.3)
    return moment


def materialize_server(
    defs: Definitions, instance: DagsterInstance, step: str, run_config: dict | None = None
):
    key = names.server_key(SERVER, step)
    return materialize(
        assets=list(defs.assets or []),
        selection=[key],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        run_config=run_config or {},
        raise_on_error=False,
    )


def backed_up_around_a_target(
    server: LocalCluster, defs: Definitions, instance: DagsterInstance, phase: str
) -> dt.datetime:
    """A base backup, then rows '<phase>: before', the target, rows '<phase>: after', all
    archived; returns the target."""
    assert materialize_server(defs, instance, names.BASE_BACKUP).success
    target = write_rows(server, f"{phase}: before")
    write_rows(server, f"{phase}: after")
    archive_now(server)
    return target


def archive_now(server: LocalCluster) -> None:
    """Switch the WAL segment and wait until it is archived: all written so far is recoverable."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    wait_until_archived(SERVER, Connection.from_url(SERVER, server.url()), segment)


def latest_metadata(instance: DagsterInstance, step: str) -> dict:
    event = instance.get_latest_materialization_event(names.server_key(SERVER, step))
    assert event is not None and event.asset_materialization is not None
    return dict(event.asset_materialization.metadata)


def asset_config(defs: Definitions, step: str, **config) -> dict:
    op_name = defs.resolve_assets_def(names.server_key(SERVER, step)).op.name
    return {"ops": {op_name: {"config": config}}}


def url_of(connection: Connection) -> str:
    return make_conninfo(connection.dsn, password=connection.password)


def phases_in(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT phase, count(*) FROM ledger GROUP BY phase").fetchall()
    return dict(rows)


def test_base_backups_restore_to_a_time_between_them_and_after_the_newest(env, archiving, instance):
    server, _ = archiving
    defs = definitions_for(env)

    write_rows(server, "before full")
    full = materialize_server(defs, instance, names.BASE_BACKUP)
    assert full.success, failure_messages(full)
    metadata = latest_metadata(instance, names.BASE_BACKUP)
    assert metadata["kind"].value == "full"
    assert "you can restore to any moment between" in metadata["recovery_window"].value
    checks = check_evaluations(full)
    assert checks[names.BASE_BACKUP_VERIFIED].passed, checks[names.BASE_BACKUP_VERIFIED].description
    assert checks[names.WAL_CONTINUOUS].passed, checks[names.WAL_CONTINUOUS].description

    write_rows(server, "after full")
    between = write_rows(server, "after full, second batch")
    write_rows(server, "just after the first target")
    incremental = materialize_server(
        defs, instance, names.BASE_BACKUP, asset_config(defs, names.BASE_BACKUP, kind="incr")
    )
    assert incremental.success, failure_messages(incremental)
    write_rows(server, "after incr")
    latest = write_rows(server, "after incr, second batch")
    write_rows(server, "just after the second target")
    archive_now(server)
    engine = BackupSettings(config_path=str(env)).server_engine(SERVER)
    source = Connection.from_url(SERVER, server.url())
    info = engine.info()
    assert [b.kind for b in info.backups][-2:] == ["full", "incr"]
    assert info.backups[-1].stopped > between  # `between` lies between the two backups
    place = ScratchPlace(None, None, str(server.bin_dir))

    with restored_copy(engine, source, target_time(between), place) as copy:
        assert phases_in(url_of(copy.connection)) == {
            "before full": 3,
            "after full": 3,
            "after full, second batch": 3,
        }
    with restored_copy(engine, source, target_time(latest), place) as copy:
        found = phases_in(url_of(copy.connection))
    assert "just after the second target" not in found
    assert found["after incr, second batch"] == 3 and found["just after the first target"] == 3
    assert not copy.directory.exists()  # the throw-away copy is gone


def test_pitr_restore_test_asset_proves_the_target_and_leaves_nothing(env, archiving, instance):
    server, _ = archiving
    defs = definitions_for(env)
    backup = materialize_server(defs, instance, names.BASE_BACKUP)
    assert backup.success, failure_messages(backup)
    scratch_before = set(Path(tempfile.gettempdir()).glob(f"pitr-{SERVER}-*"))

    result = materialize_server(defs, instance, names.PITR_RESTORE_TEST)

    assert result.success, failure_messages(result)
    evaluation = check_evaluations(result)[names.PITR_RESTORE_PROVEN]
    assert evaluation.passed, evaluation.description
    metadata = {name: value.value for name, value in evaluation.metadata.items()}
    assert metadata["problems"] == "none"
    # The copy stopped at the last commit before the target: the 'before' marker, 0.2 s earlier.
    assert 0 <= float(metadata["recovery_point_error_seconds"]) < 1
    assert metadata["restore_duration_seconds"] > 0
    assert metadata["wal_replayed_bytes"] > 0
    assert "postgres: " in metadata["databases"]
    assert "you can restore to any moment between" in metadata["recovery_window"]
    assert set(Path(tempfile.gettempdir()).glob(f"pitr-{SERVER}-*")) == scratch_before
    with psycopg.connect(server.url()) as conn:
        labels = [row[0] for row in conn.execute(f"SELECT label FROM {MARKER_TABLE}")]
    assert any(label.endswith(" before") for label in labels)
    assert any(label.endswith(" after") for label in labels)


def test_restore_server_job_restores_to_a_time_into_a_new_folder_and_records_it(
    env, archiving, instance, pitr_home
):
    server, _ = archiving
    defs = definitions_for(env)
    target = backed_up_around_a_target(server, defs, instance, "restore job")
    destination = pitr_home / "restored"
    port = free_port()

    result = run_restore_server(
        defs, instance, target_time=target.isoformat(), data_directory=str(destination), port=port
    )

    assert result.success, failure_messages(result)
    try:
        copy = Connection.from_url(SERVER, server.url()).params | {"port": str(port)}
        found = phases_in(make_conninfo(**copy, password=server.superuser_password))
        assert found.get("restore job: before") == 3 and "restore job: after" not in found
    finally:
        stop_copy(
            BackupSettings(config_path=str(env)).server_engine(SERVER), destination, server.bin_dir
        )
    observations = result.asset_observations_for_node("restore_server_to_target")
    assert observations and observations[0].metadata["outcome"].value == "restored and promoted"
    assert observations[0].asset_key == names.server_key(SERVER, names.BASE_BACKUP)

    # A second restore into the same folder: refused while it holds a cluster, by name.
    again = run_restore_server(defs, instance, data_directory=str(destination))
    assert not again.success
    assert f"{destination} is not empty" in failure_messages(again)
    assert "confirm_overwrite: main" in failure_messages(again)
    shutil.rmtree(destination)


def run_restore_server(defs: Definitions, instance: DagsterInstance, **request):
    job = defs.resolve_job_def(names.RESTORE_SERVER_JOB)
    return job.execute_in_process(
        run_config={"ops": {"restore_server_to_target": {"config": {"server": SERVER, **request}}}},
        instance=instance,
        raise_on_error=False,
    )


def _with_server_settings(env: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the module's configuration with the server's settings changed."""
    document = yaml.safe_load(env.read_text())
    document["servers"][SERVER] = {**document["servers"][SERVER], **changes}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_server_without_wal_archiving_is_refused_by_name(env, cluster, tmp_path, instance):
    plain = server_document(cluster, {"path": str(tmp_path / "repository")})[SERVER]
    config = _with_server_settings(env, tmp_path, **plain)
    os.environ[PASSWORD_ENV] = cluster.superuser_password

    result = materialize_server(definitions_for(config), instance, names.BASE_BACKUP)

    assert not result.success
    message = failure_messages(result)
    assert (
        "server 'main' does not archive its WAL: archive_mode is 'off' (set archive_mode = on)"
        in message
    )
    assert not (tmp_path / "repository").exists()  # nothing was written


def test_restore_outside_the_window_says_the_window(env, archiving, instance, pitr_home):
    defs = definitions_for(env)
    assert materialize_server(defs, instance, names.BASE_BACKUP).success
    destination = pitr_home / "never"

    result = run_restore_server(
        defs, instance, target_time="2020-01-01 00:00:00+00:00", data_directory=str(destination)
    )

    assert not result.success
    message = failure_messages(result)
    assert "server 'main' cannot be restored to 2020-01-01 00:00:00+00:00" in message
    assert "before the oldest kept base backup is consistent" in message
    assert "reachable: 20" in message and "choose a time there" in message
    assert not destination.exists()
    no_zone = run_restore_server(
        defs, instance, target_time="2026-12-01 01:00:00", data_directory=str(destination)
    )
    assert "has no time zone" in failure_messages(no_zone)


def test_missing_data_directory_and_busy_scratch_port_are_named(env, archiving, tmp_path, instance):
    server, _ = archiving
    missing = _with_server_settings(env, tmp_path, data_directory=str(tmp_path / "nowhere"))
    result = materialize_server(definitions_for(missing), instance, names.BASE_BACKUP)
    assert f"data_directory {tmp_path / 'nowhere'} does not exist" in failure_messages(result)

    busy = _with_server_settings(env, tmp_path, restore_test={"port": server.port})
    result = materialize_server(definitions_for(busy), instance, names.PITR_RESTORE_TEST)
    assert f"scratch port {server.port} is in use" in failure_messages(result)


def test_a_restored_copy_starts_on_its_own_major_versions_server(tmp_path):
    """The copy's PG_VERSION picks the binaries; pg_bin_dir (e.g. newer client tools for
    dumps) is used only when it is that version, else a clear error says what to install."""
    copy = tmp_path / "data"
    copy.mkdir()
    (copy / "PG_VERSION").write_text("15\n")
    debian_15 = Path("/usr/lib/postgresql/15/bin")
    assert server_binaries("main", copy, None) == debian_15
    assert server_binaries("main", copy, str(debian_15)) == debian_15
    assert server_binaries("main", copy, str(tmp_path)) == debian_15  # no pg_ctl there

    (copy / "PG_VERSION").write_text("99\n")
    with pytest.raises(PitrError) as refused:
        server_binaries("main", copy, str(debian_15))
    assert str(refused.value) == (
        "server 'main': its restored copy is PostgreSQL 99 and starts only on that version's "
        f"server (pg_ctl, postgres), found in none of {debian_15}, /usr/lib/postgresql/99/bin; "
        "install postgresql-99 on this machine or point pg_bin_dir at its bin folder"
    )


def test_a_wrong_cipher_passphrase_is_named_and_never_shown(
    pitr_home, cluster, instance, monkeypatch
):
    passphrase, wrong = f"right-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEST_CIPHER_PASS", passphrase)
    repository = {"path": str(pitr_home / "encrypted-repo"), "cipher_pass": "${TEST_CIPHER_PASS}"}
    server, config = own_server(monkeypatch, pitr_home, cluster, "encrypted", repository)
    password = server.superuser_password
    try:
        start_archiving(server, config)
        defs = definitions_for(config)
        with CommandLineWatch((passphrase, password)) as watch:
            good = materialize_server(defs, instance, names.BASE_BACKUP)
            test = materialize_server(defs, instance, names.PITR_RESTORE_TEST)
        assert good.success, failure_messages(good)
        assert test.success, failure_messages(test)  # the encrypted repository restores
        assert {"pgbackrest", "pg_ctl"} <= watch.programs_seen and not watch.leaks

        monkeypatch.setenv("TEST_CIPHER_PASS", wrong)
        with CommandLineWatch((passphrase, wrong, password)) as watch:
            bad = materialize_server(definitions_for(config), instance, names.BASE_BACKUP)
        # It fails at its first, short pgbackrest call (seen or not by the sampling); the
        # successful runs above are where pgbackrest's command lines were certainly read.
        assert not watch.leaks

        message = failure_messages(bad)
        assert not bad.success and "server 'main'" in message
        assert "is cipher_pass the passphrase it was created with?" in message
        events = "\n".join(str(record) for record in instance.all_logs(bad.run_id))
        for secret in (passphrase, wrong, password):
            assert secret not in message and secret not in events
    finally:
        server.destroy()


def test_s3_repository_over_https_backs_up_and_proves_a_restore(
    https_s3_endpoint, s3_endpoint, bucket, pitr_home, cluster, instance, monkeypatch
):
    server, config = own_server(
        monkeypatch, pitr_home, cluster, "s3-server", https_s3_repository(https_s3_endpoint, bucket)
    )
    try:
        start_archiving(server, config)
        defs = definitions_for(config)

        backup = materialize_server(defs, instance, names.BASE_BACKUP)
        assert backup.success, failure_messages(backup)
        test = materialize_server(defs, instance, names.PITR_RESTORE_TEST)
        assert test.success, failure_messages(test)
        assert check_evaluations(test)[names.PITR_RESTORE_PROVEN].passed

        listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
            Bucket=bucket, Prefix=f"pgbackrest/{SERVER}/"
        )
        keys = [item["Key"] for item in listed.get("Contents", [])]
        assert any("/backup/main/" in key for key in keys)
        assert any("/archive/main/" in key for key in keys)
    finally:
        server.destroy()


def test_wal_archive_measures_the_lag_and_globals_keep_the_roles(env, archiving, instance):
    server, config_path = archiving
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pitr_app_owner")
        conn.execute("CREATE ROLE pitr_app_owner LOGIN PASSWORD 'not-a-real-one'")
    archive_now(server)
    defs = definitions_for(env)

    observed = materialize(
        assets=list(defs.assets or []),
        selection=[names.server_key(SERVER, names.WAL_ARCHIVE)],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert observed.success, failure_messages(observed)
    checks = check_evaluations(observed)
    lag = checks[names.ARCHIVE_LAG]
    assert lag.passed, lag.description
    assert 0 <= lag.metadata["archive_lag_seconds"].value < 60
    assert checks[names.ARCHIVING_SUCCEEDS].passed

    saved = materialize_server(defs, instance, names.GLOBALS)
    assert saved.success, failure_messages(saved)
    text = next((config_path.parent / "backups").rglob(f"globals/{today()}.sql")).read_text()
    assert "CREATE ROLE pitr_app_owner;" in text
    assert "PASSWORD 'SCRAM-SHA-256$" in text  # a superuser may read them, so they are kept


def test_alerts_and_metrics_cover_the_server(env, archiving, instance, tmp_path):
    textfile = tmp_path / "metrics" / "backup_pipelines.prom"
    document = yaml.safe_load(env.read_text())
    document["alerts"] = {"metrics_textfile": str(textfile), "restore_test_max_age_days": 1}
    config = tmp_path / "alerting.yaml"
    config.write_text(yaml.safe_dump(document))
    defs = definitions_for(config)
    cursor = watching_since(72)

    def open_problems() -> set[str]:
        cursor_after = alerts_tick(defs, instance, cursor)
        return set(AlertState.from_cursor(cursor_after, dt.datetime.now(dt.UTC)).open)

    # Nothing ran for three days: no base backup and no PITR restore test are both alerts.
    assert {f"base_backup_stale:{SERVER}", f"pitr_restore_test_overdue:{SERVER}"} <= open_problems()

    for step in (names.BASE_BACKUP, names.PITR_RESTORE_TEST):
        assert materialize_server(defs, instance, step).success
    assert materialize(
        assets=list(defs.assets or []),
        selection=[names.server_key(SERVER, names.WAL_ARCHIVE)],
        instance=instance,
        resources=defs.resources,
    ).success

    assert not {p for p in open_problems() if p.endswith(f":{SERVER}")}
    metrics = textfile.read_text()
    for metric in (
        "wal_archive_lag_seconds",
        "wal_archive_missing_segments",
        "recovery_window_start_timestamp_seconds",
        "recovery_window_end_timestamp_seconds",
        "last_pitr_restore_test_success",
    ):
        assert f'backup_pipelines_{metric}{{server="{SERVER}"}} ' in metrics
    assert f'backup_pipelines_last_pitr_restore_test_success{{server="{SERVER}"}} 1' in metrics
    assert f'backup_pipelines_wal_archive_missing_segments{{server="{SERVER}"}} 0' in metrics


def test_runbook_commands_restore_the_server_without_this_project(
    env, archiving, instance, pitr_home
):
    server, _ = archiving
    defs = definitions_for(env)
    target = backed_up_around_a_target(server, defs, instance, "runbook")

    materialize_runbook(defs, instance)
    page = next((env.parent / "backups").rglob("recovery_runbook.html")).read_text()
    parser = RunbookParser()
    parser.feed(page)
    commands = parser.blocks[("pitr-restore", SERVER)]
    assert "you can restore" not in commands and "any moment between" in page
    assert server.superuser_password not in page

    destination, port = pitr_home / "by-hand", free_port()
    shell_env = {
        "PATH": os.environ["PATH"],
        "TARGET_TIME": target_time(target).value,
        "RESTORE_DIR": str(destination),
        "RESTORE_PORT": str(port),
    }
    done = subprocess.run(["bash", "-c", commands], env=shell_env, capture_output=True, text=True)
    try:
        assert done.returncode == 0, done.stderr
        restored = make_conninfo(server.url(), port=str(port))
        found = phases_in(restored)
        assert found.get("runbook: before") == 3 and "runbook: after" not in found
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(server.bin_dir / "pg_ctl"),
                "-D",
                str(destination),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(destination, ignore_errors=True)


def test_retention_expires_only_what_the_plan_lists_and_restores_still_work(
    env, archiving, tmp_path, instance
):
    config = _with_server_settings(
        env, tmp_path, retention={"daily": 1, "weekly": 0, "monthly": 0, "min_keep": 1}
    )
    defs = definitions_for(config)
    full = asset_config(defs, names.BASE_BACKUP, kind="full")
    for _ in range(2):
        assert materialize_server(defs, instance, names.BASE_BACKUP, full).success
    engine = BackupSettings(config_path=str(config)).server_engine(SERVER)
    before = engine.info()
    newest_full = [b for b in before.backups if b.kind == "full"][-1]
    older_fulls = {b.label for b in before.backups if b.kind == "full"} - {newest_full.label}

    planned = run_prune(defs, instance, dry_run=True)
    assert engine.info().backups == before.backups  # a plan deletes nothing
    plan = planned.metadata
    assert plan["would_expire"].value.count("a newer full backup of the same day") == len(
        older_fulls
    )
    assert newest_full.label in plan["kept"].value
    assert all(label in plan["pgbackrest_plan"].value for label in older_fulls)

    applied = run_prune(defs, instance, dry_run=False)
    after = engine.info()
    assert {b.label for b in after.backups if b.kind == "full"} == {newest_full.label}
    assert all(b.label.startswith(newest_full.label) for b in after.backups)
    assert after.wal_min is not None and after.wal_min[8:] >= newest_full.wal_start[8:]
    assert all(label in applied.metadata["expired"].value for label in older_fulls)

    proven = materialize_server(defs, instance, names.PITR_RESTORE_TEST)
    assert proven.success, failure_messages(proven)


def run_prune(defs: Definitions, instance: DagsterInstance, *, dry_run: bool):
    result = defs.resolve_job_def(names.PRUNE_SERVERS_JOB).execute_in_process(
        run_config={"ops": {"expire_server_backups": {"config": {"dry_run": dry_run}}}},
        instance=instance,
    )
    (observation,) = result.asset_observations_for_node("expire_server_backups")
    return observation


def test_backups_through_the_database_hosts_tls_server(
    https_s3_endpoint, s3_endpoint, bucket, pitr_home, cluster, instance, monkeypatch
):
    """The production topology on one machine: archive-push on the database host into S3, the
    backup driven from the worker through pgBackRest's TLS server on the database host."""
    tls = make_certificates(pitr_home / "tls", owner="postgres")
    tls_port = free_port()
    server, config = own_server(
        monkeypatch,
        pitr_home,
        cluster,
        "tls-server",
        https_s3_repository(https_s3_endpoint, bucket),
        pgbackrest_server={
            "host": "127.0.0.1",
            "port": tls_port,
            "ca_file": str(tls / "ca.crt"),
            "cert_file": str(tls / "backup-worker.crt"),
            "key_file": str(tls / "backup-worker.key"),
        },
    )
    password = server.superuser_password
    start_archiving(
        server,
        config,
        **{
            "tls-server-address": "127.0.0.1",
            "tls-server-port": str(tls_port),
            "tls-server-ca-file": str(tls / "ca.crt"),
            "tls-server-cert-file": str(tls / "database-host.crt"),
            "tls-server-key-file": str(tls / "database-host.key"),
            "tls-server-auth": f"backup-worker={SERVER}",
        },
    )
    tls_server = subprocess.Popen(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "pgbackrest",
            f"--config={server.root / 'pgbackrest.conf'}",
            "server",
        ],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", tls_port)) != 0:
            assert time.monotonic() < deadline and tls_server.poll() is None
            time.sleep(0.1)
        defs = definitions_for(config)
        backup = materialize_server(defs, instance, names.BASE_BACKUP)
        assert backup.success, failure_messages(backup)
        test = materialize_server(defs, instance, names.PITR_RESTORE_TEST)
        assert test.success, failure_messages(test)
        assert check_evaluations(test)[names.PITR_RESTORE_PROVEN].passed

        # The backup really goes through the TLS server: without it, nothing proceeds.
        os.killpg(tls_server.pid, signal.SIGTERM)
        tls_server.wait(timeout=10)
        engine = BackupSettings(config_path=str(config)).server_engine(SERVER)
        with pytest.raises(PgBackRestError, match="server 'main': pgbackrest backup"):
            nothing = RepositoryInfo([], None, None, "ok")
            dataclasses.replace(engine, timeout_seconds=15).backup("full", nothing)
    finally:
        if tls_server.poll() is None:
            os.killpg(tls_server.pid, signal.SIGKILL)
        server.destroy()


def test_restore_server_job_restores_to_a_named_restore_point(env, archiving, instance, pitr_home):
    server, _ = archiving
    defs = definitions_for(env)
    assert materialize_server(defs, instance, names.BASE_BACKUP).success
    write_rows(server, "restore point: before")
    point = f"before_migration_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_create_restore_point(%s)", (point,))
    write_rows(server, "restore point: after")
    archive_now(server)
    destination, port = pitr_home / "at-restore-point", free_port()

    result = run_restore_server(
        defs, instance, restore_point=point, data_directory=str(destination), port=port
    )

    assert result.success, failure_messages(result)
    try:
        found = phases_in(make_conninfo(server.url(), port=str(port)))
        assert found.get("restore point: before") == 3 and "restore point: after" not in found
        (observation,) = result.asset_observations_for_node("restore_server_to_target")
        assert observation.metadata["target"].value == f"name {point}"
    finally:
        engine = BackupSettings(config_path=str(env)).server_engine(SERVER)
        stop_copy(engine, destination, server.bin_dir)
        shutil.rmtree(destination, ignore_errors=True)
