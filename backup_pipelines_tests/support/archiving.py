"""Making the session's server archive its WAL into a pgBackRest repository."""

import contextlib
from pathlib import Path

import pytest

from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.servers.pgbackrest import repository_from_config
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster, archive_with_pgbackrest
from backup_pipelines_tests.support.config import PITR_PASSWORD_ENV


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
