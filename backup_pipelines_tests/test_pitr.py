"""Point-in-time recovery with pgBackRest against a real archiving PostgreSQL server and a local
repository: base backups through Dagster, restores to a moment proven row by row."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import DagsterInstance, Definitions, materialize
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core import pitr
from backup_pipelines.core.config import load_config
from backup_pipelines.core.pgbackrest import repository_from_config
from backup_pipelines.core.postgres import Connection
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster, archive_with_pgbackrest
from backup_pipelines_tests.helpers import config_document, definitions_for, failure_messages, today

SERVER = "main"
PASSWORD_ENV = "TEST_PITR_SUPERUSER_PASSWORD"


def server_config(cluster: LocalCluster, repository: dict, **extra) -> dict:
    return {
        SERVER: {
            "url": cluster.url().replace(cluster.superuser_password, f"${{{PASSWORD_ENV}}}"),
            "data_directory": str(cluster.data_dir),
            "socket_directory": str(cluster.root),
            "pgbackrest": repository,
            **extra,
        }
    }


@pytest.fixture(scope="module")
def pitr_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="backup-pipelines-pitr-"))
    home.chmod(0o755)  # the server and pgBackRest run as postgres
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def archiving(pitr_home: Path, cluster: LocalCluster) -> Iterator[tuple[LocalCluster, Path]]:
    """A second server archiving into a local pgBackRest repository; the config file for it."""
    password = uuid.uuid4().hex
    server = LocalCluster(pitr_home / "server", _free_port(), password)
    server.init()
    config_path = pitr_home / "backup_pipelines.yaml"
    document = config_document(
        cluster,
        {"local": {"path": str(pitr_home / "backups")}},
        servers=server_config(server, {"path": str(pitr_home / "repository")}),
    )
    config_path.write_text(yaml.safe_dump(document))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PASSWORD_ENV, password)
        env.setenv("TEST_BACKUP_PASSWORD", "unused")
        env.setenv("TEST_RESTORE_PASSWORD", "unused")
        repository = repository_from_config(load_config(config_path), SERVER)
        archive_with_pgbackrest(server, SERVER, {**repository.options, **repository.secrets})
        server.start()
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def check_evaluations(result) -> dict[str, object]:
    return {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }


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
    with psycopg.connect(server.url(), autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]

    engine = BackupSettings(config_path=str(env)).server_engine(SERVER)
    source = Connection.from_url(SERVER, server.url())
    pitr.wait_until_archived(SERVER, source, segment)
    info = engine.info()
    assert [b.kind for b in info.backups][-2:] == ["full", "incr"]
    assert info.backups[-1].stopped > between  # `between` lies between the two backups
    place = pitr.ScratchPlace(None, None, server.bin_dir)

    with pitr.restored_copy(engine, source, pitr.target_time(between), place) as copy:
        assert phases_in(url_of(copy.connection)) == {
            "before full": 3,
            "after full": 3,
            "after full, second batch": 3,
        }
    with pitr.restored_copy(engine, source, pitr.target_time(latest), place) as copy:
        found = phases_in(url_of(copy.connection))
    assert "just after the second target" not in found
    assert found["after incr, second batch"] == 3 and found["just after the first target"] == 3
    assert not copy.directory.exists()  # the throw-away copy is gone
