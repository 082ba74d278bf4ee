"""Two servers run by two OS users on one worker both back up: pgBackRest's lock and log folders
are per OS user, stanza and repository (never the machine-wide /tmp/pgbackrest that the first
user would own), and a configured folder another user owns is refused by name."""

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import materialize

from backup_pipelines import names
from backup_pipelines.core.servers.scratch import free_port
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster
from backup_pipelines_tests.support.archiving import start_archiving
from backup_pipelines_tests.support.config import config_document, server_document, today
from backup_pipelines_tests.support.runs import definitions_for, failure_messages, metadata_number

SECOND_USER = "bp_second_dba"
PASSWORDS = {"first": "FIRST_PITR_PASSWORD", "second": "SECOND_PITR_PASSWORD"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates an OS user and runs as it")


def ensure_os_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )


@pytest.fixture(scope="module")
def two_servers(cluster) -> Iterator[tuple[dict[str, LocalCluster], Path, Path]]:
    """Server 'first' run by postgres, server 'second' by another OS user, each archiving into
    a repository of its own; one configuration file for both."""
    ensure_os_user(SECOND_USER)
    home = Path(tempfile.mkdtemp(prefix="backup-pipelines-two-users-"))
    home.chmod(0o755)
    servers = {
        "first": LocalCluster(home / "first", free_port(), uuid.uuid4().hex),
        "second": LocalCluster(home / "second", free_port(), uuid.uuid4().hex, os_user=SECOND_USER),
    }
    documents: dict = {}
    for name, server in servers.items():
        server.init()
        document = server_document(server, {"path": str(home / f"{name}-repository")}, name)
        document[name]["url"] = document[name]["url"].replace(
            "TEST_PITR_SUPERUSER_PASSWORD", PASSWORDS[name]
        )
        documents |= document
    config = home / "backup_pipelines.yaml"
    storage = {"local": {"path": str(home / "backups")}}
    config.write_text(yaml.safe_dump(config_document(cluster, storage, servers=documents)))
    with pytest.MonkeyPatch.context() as patch:
        for name, server in servers.items():
            patch.setenv(PASSWORDS[name], server.superuser_password)
        for name, server in servers.items():
            # The database host's own pgBackRest settings (archive-push) keep its lock apart too.
            lock = home / f"{name}-host-lock"
            lock.mkdir()
            shutil.chown(lock, server.os_user)
            start_archiving(server, config, name, **{"lock-path": str(lock)})
        try:
            yield servers, config, home
        finally:
            for server in servers.values():
                server.destroy()
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def env(two_servers, monkeypatch) -> Path:
    servers, config, _ = two_servers
    for name, server in servers.items():
        monkeypatch.setenv(PASSWORDS[name], server.superuser_password)
    monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(config))
    return config


def test_two_servers_of_two_os_users_both_back_up(two_servers, env, instance):
    servers, _, _ = two_servers
    for server in servers.values():
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ledger (id serial, at timestamptz)")
            conn.execute("INSERT INTO ledger (at) VALUES (now())")
            # No stanza yet (the first backup makes it): this segment's archiving fails.
            conn.execute("SELECT pg_switch_wal()")
    defs = definitions_for(env)
    result = materialize(
        assets=list(defs.assets or []),
        selection=[names.server_key(name, names.BASE_BACKUP) for name in servers],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    checks = {
        (e.asset_key.path[1], e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    for name in servers:
        assert checks[(name, names.BASE_BACKUP_VERIFIED)] and checks[(name, names.WAL_CONTINUOUS)]

    settings = BackupSettings(config_path=str(env))
    folders = {}
    for name, server in servers.items():
        engine = settings.server_engine(name)
        assert engine.runs_as == server.os_user
        assert len(engine.info().backups) == 1
        lock = engine.folders["LOCK_PATH"]
        assert pwd.getpwuid(lock.stat().st_uid).pw_name == server.os_user
        assert not str(lock).startswith("/tmp/pgbackrest")
        folders[name] = lock
    assert folders["first"] != folders["second"]

    # Those failures came before the repository held anything, and wal_archive says so.
    observed = materialize(
        assets=list(defs.assets or []),
        selection=[names.server_key("second", names.WAL_ARCHIVE)],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    (archiving,) = [
        e
        for e in observed.get_asset_check_evaluations()
        if e.check_name == names.ARCHIVING_SUCCEEDS
    ]
    assert archiving.passed
    assert metadata_number(archiving.metadata["failed_count"]) > 0
    assert "before the repository existed" in archiving.description


def test_a_lock_folder_another_user_owns_is_refused_by_name(two_servers, env, instance, tmp_path):
    _, config, home = two_servers
    document = yaml.safe_load(config.read_text())
    taken = home / "root-owned-lock"
    taken.mkdir(mode=0o700, exist_ok=True)
    document["servers"]["second"]["pgbackrest"]["lock_path"] = str(taken)
    changed = tmp_path / "backup_pipelines.yaml"
    changed.write_text(yaml.safe_dump(document))
    defs = definitions_for(changed)
    result = materialize(
        assets=list(defs.assets or []),
        selection=[names.server_key("second", names.BASE_BACKUP)],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert not result.success
    message = failure_messages(result)
    assert f"pgBackRest's lock folder {taken} belongs to root, not {SECOND_USER}" in message
    assert "servers.second.pgbackrest.lock_path" in message
