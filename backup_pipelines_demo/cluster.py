"""A throw-away local PostgreSQL server, for the demo, the tests and the benchmarks.

initdb refuses to run as root, so as root the server runs as a system user: `postgres` unless
another is given.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from backup_pipelines.core.common.client_tools import find_client_tools
from backup_pipelines.core.servers.scratch import free_port

SUPERUSER = "postgres"
SERVER_OS_USER = "postgres"


def _as_server_user(os_user: str) -> list[str]:
    return ["runuser", "-u", os_user, "--"] if os.geteuid() == 0 else []


def _give_to_server_user(path: Path, os_user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class ClusterError(RuntimeError):
    pass


@dataclass
class LocalCluster:
    root: Path
    port: int
    superuser_password: str
    bin_dir: Path | None = None
    os_user: str = SERVER_OS_USER  # the system user the server runs as, when started by root

    def __post_init__(self) -> None:
        self.bin_dir = self.bin_dir or find_client_tools(None).bin_dir
        self.data_dir = self.root / "data"

    def _run(self, program: str, *args: str) -> None:
        assert self.bin_dir is not None
        done = subprocess.run(
            [*_as_server_user(self.os_user), str(self.bin_dir / program), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        if done.returncode != 0:
            raise ClusterError(f"{program} failed for {self.data_dir}: {done.stderr.strip()}")

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to_server_user(self.root, self.os_user)
        password_file = self.root / "superuser.pw"
        password_file.write_text(self.superuser_password)
        _give_to_server_user(password_file, self.os_user)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(password_file),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            password_file.unlink()

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_wal_size=4GB",
            "start",
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(
        self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        secret = self.superuser_password if password is None and user == SUPERUSER else password
        auth = f"{user}:{secret}" if secret else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def change_a_setting(self) -> str:
        """Turn the slow-statement log's threshold between 250 and 500 ms (ALTER SYSTEM, which
        writes postgresql.auto.conf) and reload; says what it did."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute("SHOW log_min_duration_statement").fetchone()
            value = "500ms" if row and row[0] == "250ms" else "250ms"
            conn.execute(f"ALTER SYSTEM SET log_min_duration_statement = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        return f"set log_min_duration_statement to {value} on the server"


def start_cluster(root: Path, password: str, port: int | None = None) -> LocalCluster:
    """Start the cluster at `root`, creating it first if needed; reuse it when it exists."""
    cluster = LocalCluster(root, port or free_port(), password)
    if not cluster.initialized:
        shutil.rmtree(root, ignore_errors=True)
        cluster.init()
    if (cluster.data_dir / "postmaster.pid").exists():
        with contextlib.suppress(ClusterError):
            cluster.stop()  # left running by an earlier session, maybe on another port
    cluster.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", cluster.port)) == 0:
                return cluster
        time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL at {root} did not start; see {root / 'server.log'}")


def archive_with_pgbackrest(cluster: LocalCluster, stanza: str, repository: dict[str, str]) -> bool:
    """Make `cluster` a database host that archives its WAL with pgBackRest: a pgbackrest.conf
    readable only by the server's user (it holds the repository's keys, as on any database host)
    and archive_command pushing each segment. With two repositories, archiving is asynchronous,
    so one unreachable repository does not stall the other. Takes effect at the next start;
    returns whether the settings were added now (False: the cluster archived already)."""
    config = cluster.root / "pgbackrest.conf"
    two = any(option.startswith("repo2-") for option in repository)
    lines = [
        "[global]",
        *(f"{name}={value}" for name, value in repository.items()),
        *(["archive-async=y", f"spool-path={cluster.root / 'pgbackrest-spool'}"] if two else []),
        "log-level-console=warn",
        "log-level-file=off",
        f"[{stanza}]",
        f"pg1-path={cluster.data_dir}",
        f"pg1-port={cluster.port}",
        f"pg1-socket-path={cluster.root}",
    ]
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    _give_to_server_user(config, cluster.os_user)
    settings_file = cluster.data_dir / "postgresql.conf"
    if _ARCHIVING_MARK in settings_file.read_text():
        return False
    with settings_file.open("a") as settings:
        settings.write(
            f"\n{_ARCHIVING_MARK}\n"
            "archive_mode = on\nwal_level = replica\narchive_timeout = 60\n"
            f"archive_command = 'pgbackrest --config={config} --stanza={stanza} archive-push %p'\n"
        )
    return True


_ARCHIVING_MARK = "# WAL archiving with pgBackRest (backup_pipelines_demo)"
