"""Dagster resources: the configuration file and what it configures (stores, connections, tools).

Only the file's path is Dagster config; its `${VAR}` values are expanded inside the run, so
no secret reaches run config, the definitions or the UI.
"""

from functools import cached_property
from pathlib import Path

from dagster import ConfigurableResource, Definitions, InitResourceContext
from pydantic import PrivateAttr

from backup_pipelines import names
from backup_pipelines.core.common.client_tools import ClientTools, find_client_tools
from backup_pipelines.core.common.config import BackupConfig, ConfigError, expand_env, load_config
from backup_pipelines.core.common.encryption import ArchiveKey, key_from_config
from backup_pipelines.core.common.postgres_client import Connection, PostgresError
from backup_pipelines.core.common.stores import BackupStores, replica_store, stores_from_config
from backup_pipelines.core.postgres.dump import DumpSettings
from backup_pipelines.core.postgres.restore_test import RestoreTestSettings
from backup_pipelines.core.servers.pgbackrest import Engine, engine_from_config
from backup_pipelines.core.servers.scratch import ScratchPlace
from backup_pipelines.storage import ObjectStore, StorageError


class DatabaseSettings:
    """What a run's steps need about one database, each resolved once: its URL is expanded once
    however many steps and checks ask for the connection or the database name it gives."""

    def __init__(self, config: BackupConfig, database: str) -> None:
        self.name, self._config = database, config

    @cached_property
    def connection(self) -> Connection:
        url = self._config.databases[self.name].url
        return Connection.from_url(self.name, expand_env(url, f"databases.{self.name}.url"))

    @property
    def configured_name(self) -> str | None:
        """The database name the URL gives, or None (not given, or the URL cannot be read here:
        then only the archive's own header and manifest are compared)."""
        try:
            return self.connection.params.get("dbname")
        except (ConfigError, PostgresError):
            return None


class BackupSettings(ConfigurableResource):
    """The operator's configuration file (see README), read afresh by each run."""

    config_path: str
    _config: BackupConfig | None = PrivateAttr(default=None)
    _stores: BackupStores | None = PrivateAttr(default=None)
    _replica: ObjectStore | None = PrivateAttr(default=None)
    _archive_key: ArchiveKey | None = PrivateAttr(default=None)
    _databases: dict[str, DatabaseSettings] = PrivateAttr(default_factory=dict)
    _client_tools: ClientTools | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Once per run: every step then shares one parsed file and one set of clients, each
        # built when first needed (the failover drill never builds the primary's).
        self._config = load_config(self.config_path)
        self._stores = self._replica = None
        self._databases, self._client_tools = {}, None

    def config(self) -> BackupConfig:
        return self._config or load_config(self.config_path)

    def stores(self) -> BackupStores:
        if self._config is None:  # outside a run: the file as it is now
            return stores_from_config(self.config())
        if self._stores is None:
            self._stores = stores_from_config(self._config)
        return self._stores

    def replica_store(self) -> ObjectStore:
        """The replica (`replica:`), built from its own settings and credentials alone."""
        if self._config is None:
            return replica_store(self.config())
        if self._replica is None:
            self._replica = replica_store(self._config)
        return self._replica

    def usable_replica_store(self) -> tuple[ObjectStore | None, str | None]:
        """The replica store, or why it cannot be built now (bad settings, a credential not
        set); (None, None) when none is configured. Whoever asks goes on without it."""
        if self.config().replica is None:
            return None, None
        try:
            return self.replica_store(), None
        except (ConfigError, StorageError) as error:
            return None, str(error)

    def database(self, database: str) -> DatabaseSettings:
        if database not in self._databases:
            self._databases[database] = DatabaseSettings(self.config(), database)
        return self._databases[database]

    def scratch_connection(self, database: str) -> Connection:
        """Where `database` is restore-tested: restore_test.url, else its own server."""
        config = self.config()
        if config.restore_test.url:
            return Connection.from_url(
                database, expand_env(config.restore_test.url, "restore_test.url")
            )
        return self.database(database).connection

    def restore_test_settings(self, database: str) -> RestoreTestSettings:
        config = self.config()
        scratch_dir = config.restore_test.scratch_dir
        return RestoreTestSettings(
            jobs=config.restore_test.jobs,
            scratch_dir=expand_env(scratch_dir, "restore_test.scratch_dir")
            if scratch_dir
            else None,
            pg_bin_dir=config.pg_bin_dir,
            assertions=tuple(config.databases[database].restore_assertions),
            key=self.archive_key(),
            configured_name=self.database(database).configured_name,
        )

    def dump_settings(self) -> DumpSettings:
        config = self.config()
        return DumpSettings(
            config.compression, config.compression_level, config.pg_bin_dir, self.archive_key()
        )

    def archive_key(self) -> ArchiveKey | None:
        """The encryption key, loaded (and unwrapped with KMS) once per run; None when off."""
        encryption = self.config().encryption
        if encryption is None:
            return None
        if self._archive_key is None:
            self._archive_key = key_from_config(encryption)
        return self._archive_key

    def server_connection(self, server: str) -> Connection:
        url = expand_env(self.config().servers[server].url, f"servers.{server}.url")
        return Connection.from_url(server, url)

    def server_engine(self, server: str, *, repo: int = 1, alone: bool = False) -> Engine:
        """pgBackRest for `server`, on repository `repo`; `alone`: with only that repository's
        settings and credentials."""
        return engine_from_config(
            self.config(), server, self.server_connection(server), repo=repo, alone=alone
        )

    def scratch_place(self, server: str) -> ScratchPlace:
        """Where `server`'s PITR restore test runs its throw-away copy."""
        settings = self.config().servers[server].restore_test
        where = f"servers.{server}.restore_test.scratch_dir"
        return ScratchPlace(
            Path(expand_env(settings.scratch_dir, where)) if settings.scratch_dir else None,
            settings.port,
            self.config().pg_bin_dir,
        )

    def client_tools(self) -> ClientTools:
        if self._client_tools is None:
            self._client_tools = find_client_tools(self.config().pg_bin_dir)
        return self._client_tools


def resource_definitions(config_path: str) -> Definitions:
    """The resources every domain's assets and ops ask for by name."""
    settings = BackupSettings(config_path=config_path)
    return Definitions(
        resources={
            names.SETTINGS_RESOURCE: settings,
        }
    )
