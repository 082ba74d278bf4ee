"""Restoring a server for real (the day of the disaster): into a new directory, or over a stopped
cluster when confirmed by name, to a moment inside the window; never over a running server."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import (
    BackupSet,
    Engine,
    RecoveryTarget,
    RepositoryInfo,
)
from backup_pipelines.core.servers.restore_points import backup_before
from backup_pipelines.core.servers.scratch import (
    RestoredServer,
    require_free_port,
    scratch_connection,
    server_binaries,
    start_copy,
)
from backup_pipelines.core.servers.window import backup_for, require_in_window, window_for


@dataclass(frozen=True)
class ServerRestoreRequest:
    target: RecoveryTarget
    destination: Path
    port: int | None  # start the copy here (None: leave it stopped)
    confirm_overwrite: str | None  # the server's name, to restore over a stopped cluster
    point_lsn: str | None = None  # where a named target was recorded, when it was


@dataclass(frozen=True)
class RestoreOutcome:
    destination: Path
    backup: BackupSet | None
    port: int | None
    seconds: float


def restore_server(
    engine: Engine, source: Connection, request: ServerRestoreRequest, pg_bin_dir: str | None
) -> RestoreOutcome:
    """Restore `engine`'s server into `request.destination` (a new directory, or a stopped
    cluster's when confirmed by name), optionally start it; never over a running server."""
    destination = request.destination
    _refuse_overwrite(engine.server, destination, request.confirm_overwrite)
    info = engine.info()
    backup = info.backups[-1] if info.backups else None
    chosen: dict[str, str] = {}
    if request.target.kind == "time":
        moment = _aware(engine.server, str(request.target.value))
        window = window_for(engine, info, source)
        require_in_window(engine.server, window, info.backups, moment)
        backup = backup_for(info.backups, moment)
    elif request.target.kind == "name" and request.point_lsn is not None:
        backup = _backup_before_point(engine.server, info, request)
    if backup is not None and request.target.kind != "latest":
        chosen = {"SET": backup.label}  # pgBackRest would otherwise take the newest backup
    if request.port is not None:
        require_free_port(engine.server, request.port)
    started = time.monotonic()
    replacing = destination.exists() and any(destination.iterdir())
    if not destination.exists():
        destination.mkdir(mode=0o700, parents=True)
        engine.give(destination)
    delta = ["--delta"] if replacing else []
    engine.run(
        "restore",
        *delta,
        local=True,
        PG1_PATH=str(destination),
        **request.target.options(),
        **chosen,
    )
    if request.port is not None:
        copy = RestoredServer(
            destination, request.port, scratch_connection(source, destination, request.port)
        )
        bin_dir = server_binaries(engine.server, destination, pg_bin_dir)
        start_copy(engine, copy, destination, bin_dir, private=False)
    return RestoreOutcome(destination, backup, request.port, time.monotonic() - started)


def _backup_before_point(
    server: str, info: RepositoryInfo, request: ServerRestoreRequest
) -> BackupSet:
    """The newest backup that ends before the named point; none does: it cannot be reached."""
    assert request.point_lsn is not None
    backup = backup_before(info.backups, request.point_lsn)
    if backup is not None:
        return backup
    oldest = info.backups[0] if info.backups else None
    raise PitrError(
        f"server {server!r}: restore point {request.target.value!r} (at {request.point_lsn}) "
        + (
            f"lies before the end of the oldest kept base backup {oldest.label} (which "
            f"ends at {oldest.stop_lsn}); its WAL has expired, so it cannot be reached"
            if oldest
            else "cannot be reached: the repository holds no base backup"
        )
    )


def _aware(server: str, value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise PitrError(
            f"server {server!r}: target time {value!r} is not an ISO 8601 time such as "
            "2026-12-01 01:58:00+00:00"
        ) from None
    if moment.tzinfo is None:
        raise PitrError(
            f"server {server!r}: target time {value!r} has no time zone; add one (e.g. "
            "+00:00) so the moment is unambiguous"
        )
    return moment


def _refuse_overwrite(server: str, destination: Path, confirm: str | None) -> None:
    pid_file = destination / "postmaster.pid"
    if pid_file.exists():
        raise PitrError(
            f"server {server!r}: {destination} holds a running PostgreSQL server (postmaster.pid "
            "is present); stop it first: a restore never overwrites a running cluster"
        )
    if destination.exists() and any(destination.iterdir()) and confirm != server:
        raise PitrError(
            f"server {server!r}: {destination} is not empty; restore into a new directory, or "
            f"set confirm_overwrite: {server} to replace the stopped cluster there"
        )
