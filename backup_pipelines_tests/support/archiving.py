"""Making the session's server archive its WAL into a pgBackRest repository."""

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.servers.pgbackrest import repository_from_config
from backup_pipelines.core.servers.scratch import free_port
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster, archive_with_pgbackrest
from backup_pipelines_tests.support.config import (
    PITR_PASSWORD_ENV,
    config_document,
    server_document,
)
from backup_pipelines_tests.support.folders import shared_folder


def start_archiving(
    cluster: LocalCluster, config: Path, name: str = "main", **database_host: str
) -> None:
    """Make `cluster` archive its WAL into the repository `config` gives server `name` (plus
    any further pgBackRest options of the database host), start it and create the stanza."""
    repository = repository_from_config(load_config(config), name)
    options = {**repository.options, **repository.secrets, **database_host}
    archive_with_pgbackrest(cluster, name, options)
    cluster.start()
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(pytest.MonkeyPatch.context())
        env.setenv(PITR_PASSWORD_ENV, cluster.superuser_password)
        if not database_host:  # through a TLS server the stanza is made by the first backup
            BackupSettings(config_path=str(config)).server_engine(name).create_stanza()


def https_s3_repository(endpoint_and_ca: tuple[str, Path], bucket: str) -> dict:
    """A `pgbackrest:` section for an S3 bucket behind the tests' TLS terminator."""
    endpoint, ca_file = endpoint_and_ca
    return {
        "s3": {"bucket": bucket, "endpoint": endpoint, "uri_style": "path", "ca_file": str(ca_file)}
    }


@contextlib.contextmanager
def archiving_server(
    cluster: LocalCluster, folder: str, repository: dict | None = None
) -> Iterator[tuple[LocalCluster, Path, Path]]:
    """A server of its own archiving into `repository` (default: a local one in
    `<home>/repository`), with an empty `ledger (id, phase)` table, and a configuration naming
    it `main` beside the session's databases; its PITR copies go to `<home>/scratch`, apart
    from other modules' copies. Yields (server, configuration file, home); the server is
    destroyed afterwards."""
    with shared_folder(folder) as home:
        server = LocalCluster(home / "server", free_port(), uuid.uuid4().hex)
        server.init()
        servers = server_document(server, repository or {"path": str(home / "repository")})
        (home / "scratch").mkdir(mode=0o755)
        servers["main"]["restore_test"] = {"scratch_dir": str(home / "scratch")}
        config = home / "backup_pipelines.yaml"
        storage = {"local": {"path": str(home / "backups")}}
        config.write_text(yaml.safe_dump(config_document(cluster, storage, servers=servers)))
        try:
            start_archiving(server, config)
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute("CREATE TABLE ledger (id serial PRIMARY KEY, phase text NOT NULL)")
            yield server, config, home
        finally:
            server.destroy()
