"""A server's second pgBackRest repository (`pgbackrest.repo2`): WAL is pushed to both
(asynchronously), a base backup goes to the repository asked for, and with the first repository
deleted entirely the restore_server job restores the server from the second alone, with only
its settings, to a named point: exactly the rows committed before it."""

import shutil
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.restore_points import create_restore_point
from backup_pipelines.core.servers.scratch import free_port, stop_copy
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_tests.support.archiving import archiving_server
from backup_pipelines_tests.support.config import PITR_PASSWORD_ENV
from backup_pipelines_tests.support.folders import shared_folder
from backup_pipelines_tests.support.runs import definitions_for, failure_messages

SERVER = "main"


def write_rows(url: str, phase: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO ledger (phase) SELECT %s FROM generate_series(1, 3)", (phase,))


def phases_in(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT phase, count(*) FROM ledger GROUP BY phase").fetchall())


def test_the_second_repository_alone_restores_the_server_to_a_point(cluster, instance, monkeypatch):
    with shared_folder("repositories") as places:
        first, second = places / "repo1", places / "repo2"
        repository = {"path": str(first), "repo2": {"path": str(second)}}
        with archiving_server(cluster, "second-repository", repository) as (server, config, home):
            monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
            settings = BackupSettings(config_path=str(config))
            for repo in (1, 2):
                engine = settings.server_engine(SERVER, repo=repo)
                backup, after = engine.backup("full", engine.info())
                assert [b.label for b in after.backups] == [backup.label]  # its own repository
            connection = Connection.from_url(SERVER, server.url())
            write_rows(server.url(), "before the point")
            name = f"before-migration-{uuid.uuid4().hex[:6]}"
            point = create_restore_point(SERVER, connection, name, requested_by="the tests")
            write_rows(server.url(), "after the point")
            for repo in (1, 2):  # archive-push wrote the point's segment to both
                info = settings.server_engine(SERVER, repo=repo).info()
                assert info.wal_max is not None and info.wal_max[8:] >= point.wal_segment[8:]

            shutil.rmtree(first)  # the first repository is gone
            alone = settings.server_engine(SERVER, repo=2, alone=True)
            assert alone.repository.count == 1
            assert alone.repository.describe() == str(second)
            destination, port = home / "from-the-second", free_port()
            request = {
                "server": SERVER,
                "restore_point": name,
                "data_directory": str(destination),
                "port": port,
                "repository": 2,
            }
            defs = definitions_for(config)
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
