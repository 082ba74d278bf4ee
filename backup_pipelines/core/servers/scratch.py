"""A restored copy of a server: restored by the engine into a throw-away directory, started on a
scratch port with its own socket, waited for until promoted, stopped and deleted afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backup_pipelines.core.common.client_tools import DEBIAN_PG_ROOT, major_version_of
from backup_pipelines.core.common.postgres_client import Connection, PostgresError, redact, scalar
from backup_pipelines.core.servers.errors import PitrError, RestoreStageError
from backup_pipelines.core.servers.pgbackrest import Engine, PgBackRestError, RecoveryTarget

PROMOTION_WAIT_SECONDS = 600


@dataclass
class RestoredServer:
    """A restored data directory running on a scratch port, reached through its own socket."""

    directory: Path
    port: int
    connection: Connection  # the source server's credentials, pointed at the copy
    restore_seconds: float = 0.0
    start_seconds: float = 0.0

    def databases(self) -> list[str]:
        with self.connection.connect(autocommit=True) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                "ORDER BY datname"
            ).fetchall()
        return [row[0] for row in rows]


def require_free_port(server: str, port: int) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise PitrError(
                f"server {server!r}: scratch port {port} is in use by another process; choose "
                "another port (or leave it unset to pick a free one)"
            )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ScratchPlace:
    """Where a restored copy may live and run."""

    parent: Path | None  # default: the system temp folder
    port: int | None  # default: a free one
    pg_bin_dir: str | None  # the configured PostgreSQL bin folder, if any


@contextlib.contextmanager
def restored_copy(
    engine: Engine, source: Connection, target: RecoveryTarget, place: ScratchPlace
) -> Iterator[RestoredServer]:
    """Restore `engine`'s server to `target` into a throw-away directory, start it on a scratch
    port and wait until it is promoted; stopped and deleted on leaving, whatever happened."""
    port = place.port or free_port()
    require_free_port(engine.server, port)
    if place.parent is not None and not place.parent.is_dir():
        raise PitrError(f"server {engine.server!r}: scratch folder {place.parent} does not exist")
    holder = Path(tempfile.mkdtemp(prefix=f"pitr-{engine.stanza}-", dir=place.parent))
    directory = holder / "data"
    bin_dir: Path | None = None
    try:
        engine.give(holder)
        holder.chmod(0o700)
        started = time.monotonic()
        try:
            engine.restore(directory, target)
        except PgBackRestError as error:
            raise RestoreStageError(engine.server, "restore", str(error)) from None
        restore_seconds = time.monotonic() - started
        copy = RestoredServer(directory, port, scratch_connection(source, holder, port))
        copy.restore_seconds = restore_seconds
        try:
            bin_dir = server_binaries(engine.server, directory, place.pg_bin_dir)
        except PitrError as error:
            raise RestoreStageError(engine.server, "start", str(error)) from None
        start_copy(engine, copy, holder, bin_dir, private=True)
        copy.start_seconds = time.monotonic() - started - restore_seconds
        yield copy
    finally:
        if bin_dir is not None:
            stop_copy(engine, directory, bin_dir)
        shutil.rmtree(holder, ignore_errors=True)


def scratch_connection(source: Connection, socket_dir: Path, port: int) -> Connection:
    params = {**source.params, "host": str(socket_dir), "port": str(port)}
    return Connection(source.database, params, source.password)


def server_binaries(server: str, directory: Path, pg_bin_dir: str | None) -> Path:
    """The folder of pg_ctl and postgres of the major version that made the restored cluster
    in `directory` (its PG_VERSION): a cluster starts only on its own major version."""
    major = int((directory / "PG_VERSION").read_text().strip())
    places = [Path(pg_bin_dir)] if pg_bin_dir else []
    places.append(DEBIAN_PG_ROOT / str(major) / "bin")
    for folder in places:
        programs = (folder / "pg_ctl", folder / "postgres")
        if all(p.exists() for p in programs) and major_version_of(programs[1]) == major:
            return folder
    raise PitrError(
        f"server {server!r}: its restored copy is PostgreSQL {major} and starts only on that "
        f"version's server (pg_ctl, postgres), found in none of {', '.join(map(str, places))}; "
        f"install postgresql-{major} on this machine or point pg_bin_dir at its bin folder"
    )


def start_copy(
    engine: Engine, copy: RestoredServer, socket_dir: Path, bin_dir: Path, *, private: bool
) -> None:
    """Start a restored copy and wait for its promotion. archive_mode is off for this start:
    a copy must not push a new timeline into the source's repository unasked. A `private` copy
    (a test's) listens on its socket only."""
    options = f"-p {copy.port} -k {socket_dir} -c archive_mode=off"
    if private:
        options += " -c listen_addresses=''"
    log = socket_dir / "restore-start.log"
    done = subprocess.run(
        [
            *engine.as_user(),
            str(bin_dir / "pg_ctl"),
            "-D",
            str(copy.directory),
            "-l",
            str(log),
            "-o",
            options,
            "-t",
            str(PROMOTION_WAIT_SECONDS),
            "-w",
            "start",
        ],
        # restore_command (pgbackrest archive-get) reads the repository from this environment,
        # so no file holds its keys; it is only needed until the copy is promoted.
        env=engine.environment(local=True, PG1_PATH=str(copy.directory)),
        capture_output=True,
        text=True,
        cwd="/",
    )
    if done.returncode != 0:
        stage, reason = _why_stopped(log, "the restored copy did not start")
        raise RestoreStageError(engine.server, stage, reason, _log_lines(engine, log))
    _wait_for_promotion(engine, copy, log)


def _wait_for_promotion(engine: Engine, copy: RestoredServer, log: Path) -> None:
    """Wait until the copy leaves recovery; a copy whose server exits meanwhile failed there."""
    deadline = time.monotonic() + PROMOTION_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            with copy.connection.connect(autocommit=True) as conn:
                if not scalar(conn, "SELECT pg_is_in_recovery()"):
                    return
        except PostgresError:
            if not (copy.directory / "postmaster.pid").exists():
                stage, reason = _why_stopped(log, "the restored copy stopped during recovery")
                raise RestoreStageError(
                    engine.server, stage, reason, _log_lines(engine, log)
                ) from None
        time.sleep(0.3)
    raise RestoreStageError(
        engine.server,
        "promotion",
        f"the restored copy was still in recovery after {PROMOTION_WAIT_SECONDS} s",
        _log_lines(engine, log),
    )


_STOPPED_IN_REPLAY = "recovery ended before configured recovery target was reached"


def _why_stopped(log: Path, default: str) -> tuple[str, str]:
    """The stage and reason of a copy that exited, from its log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if _STOPPED_IN_REPLAY in text:
        return "replay", (
            "recovery ended before the target was reached: the archive holds no WAL to replay "
            "up to it"
        )
    return ("replay" if "redo starts" in text else "start"), default


def _log_lines(engine: Engine, log: Path, count: int = 12) -> list[str]:
    """The copy's last log lines, without any of the engine's secrets."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()[-count:]
    except FileNotFoundError:
        return ["no server log"]
    secrets = [engine.password, *engine.repository.secrets.values()]
    return [redact(line, secrets) for line in lines]


def stop_copy(engine: Engine, directory: Path, bin_dir: Path) -> None:
    """Stop the restored server in `directory`, if it runs (immediately: it is a copy)."""
    if (directory / "postmaster.pid").exists():
        subprocess.run(
            [
                *engine.as_user(),
                str(bin_dir / "pg_ctl"),
                "-D",
                str(directory),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            cwd="/",
        )
