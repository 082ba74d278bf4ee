"""Configuration for the tests: the test passwords, URLs of the session's server (or of no
server, for tests that only load definitions) and configuration documents."""

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

# Distinctive, so a test can search every log line and event for it.
BACKUP_PASSWORD = "Pw-7qZ1x-never-print-me"
RESTORE_TEST_PASSWORD = "Rt-4kP9w-never-print-me"
TEST_DATABASES = ("agentic", "langfuse")


class Server(Protocol):
    """Where the configuration points: the session's server (a LocalCluster) or `NO_SERVER`."""

    def url(self, database: str = ..., user: str = ..., password: str | None = ...) -> str: ...


@dataclass(frozen=True)
class _NoServer:
    """A server address nobody listens on (the discard port): definitions, configuration and
    schedules load without connecting, so tests of them need no PostgreSQL."""

    port: int = 9

    def url(
        self, database: str = "postgres", user: str = "postgres", password: str | None = None
    ) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"


NO_SERVER = _NoServer()


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def yesterday() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def backup_url(cluster: Server, database: str) -> str:
    return cluster.url(database, user="backup", password="${TEST_BACKUP_PASSWORD}")


def scratch_url(cluster: Server) -> str:
    return cluster.url("postgres", user="restore_tester", password="${TEST_RESTORE_PASSWORD}")


def target_url(cluster) -> str:
    return cluster.url("postgres", password="${TEST_TARGET_PASSWORD}")


def config_document(
    cluster: Server,
    storage: dict | None = None,
    databases: dict | None = None,
    **extra: dict,
) -> dict:
    """A configuration for the session's server: local storage, the test databases, the
    restore tester's scratch URL; passwords as ${TEST_...} references."""
    return {
        "storage": storage or {"local": {"path": "./backups"}},
        "databases": databases
        or {name: {"url": backup_url(cluster, name)} for name in TEST_DATABASES},
        **extra,
        "restore_test": {"url": scratch_url(cluster), **extra.get("restore_test", {})},
    }


PITR_PASSWORD_ENV = "TEST_PITR_SUPERUSER_PASSWORD"


def server_document(cluster: Server, repository: dict, name: str = "main") -> dict:
    """A `servers:` entry for `cluster`: its superuser (password as ${TEST_PITR_…}), its data
    directory and socket, the given pgBackRest repository."""
    return {
        name: {
            "url": cluster.url().replace(cluster.superuser_password, f"${{{PITR_PASSWORD_ENV}}}"),
            "data_directory": str(cluster.data_dir),
            "socket_directory": str(cluster.root),
            "pgbackrest": repository,
        }
    }
