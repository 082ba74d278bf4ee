"""Point-in-time recovery of a whole PostgreSQL server: its WAL archiving observed, its recovery
window, base backups, and restores to a moment, proven on a throw-away copy.

The engine (pgBackRest) is core/pgbackrest.py; this module only asks it for backups, the
repository's contents and restores, so another engine could take its place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from backup_pipelines import names
from backup_pipelines.core.pgbackrest import (
    BackupSet,
    Engine,
    PgBackRestError,
    RecoveryTarget,
    RepositoryInfo,
)
from backup_pipelines.core.postgres import (
    DEBIAN_PG_ROOT,
    ClientTools,
    Connection,
    PostgresError,
    major_version_of,
    redact,
)
from backup_pipelines.core.retention import BackupStatus, RetentionPolicy, decide
from backup_pipelines.core.verification import CheckOutcome
from backup_pipelines.core.wal import (
    DEFAULT_SEGMENT_SIZE,
    Continuity,
    Gap,
    Stretch,
    check_continuity,
    reachable_stretches,
)
from backup_pipelines.core.wal import utc_text as _iso

MARKER_TABLE = "backup_pipelines_pitr_marker"
ARCHIVE_WAIT_SECONDS = 120
PROMOTION_WAIT_SECONDS = 600


class PitrError(RuntimeError):
    """A server cannot be backed up or recovered as asked; the message says which and why."""


class RestoreStageError(PitrError):
    """A restore to a moment failed at one `stage` (window, restore, start, replay, promotion,
    validation): why, and the restored copy's own last log lines."""

    def __init__(self, server: str, stage: str, reason: str, log_lines: list[str] | None = None):
        self.server, self.stage, self.reason = server, stage, reason
        self.log_lines = log_lines or []
        self.target: dt.datetime | None = None
        self.window: RecoveryWindow | None = None
        severe = [
            line for line in self.log_lines if any(f" {level}: " in line for level in _SEVERE)
        ]
        tail = " | ".join((severe or self.log_lines)[-3:])
        super().__init__(f"server {server!r}: {reason}" + (f": {tail}" if tail else ""))

    def about(
        self, target: dt.datetime, window: RecoveryWindow | None, gap: Gap | None
    ) -> RestoreStageError:
        """The same failure of a restore to `target`, with the window and the gap (if any)
        that explain it."""
        missing = f"; the repository is missing {gap.segments()}: {gap.unreachable()}"
        error = RestoreStageError(
            self.server, self.stage, self.reason + (missing if gap else ""), self.log_lines
        )
        error.target, error.window = target, window
        return error


_SEVERE = ("FATAL", "PANIC", "ERROR")


# --- the server's archiving -------------------------------------------------------------------
_ARCHIVER = """
SELECT current_setting('archive_mode'), current_setting('wal_level'),
       current_setting('archive_command'),
       (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'),
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time, a.stats_reset,
       clock_timestamp(), pg_walfile_name(pg_current_wal_lsn()),
       (pg_walfile_name_offset(pg_current_wal_lsn())).file_offset,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
FROM pg_stat_archiver a
"""


@dataclass(frozen=True)
class ArchiverStatus:
    """What pg_stat_archiver and the settings say about a server's WAL archiving."""

    archive_mode: str
    wal_level: str
    archive_command: str
    archive_timeout_seconds: int
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: dt.datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: dt.datetime | None
    stats_reset: dt.datetime
    measured_at: dt.datetime
    current_wal: str
    current_wal_offset: int
    wal_segment_size: int = DEFAULT_SEGMENT_SIZE

    @property
    def lag_seconds(self) -> float:
        """How old the oldest WAL not yet in the archive is, at most (the measured RPO): 0 when
        everything up to the segment being written is archived and nothing has been written
        into that segment yet; else the time since the last successful archive."""
        caught_up = (
            self.last_archived_wal is not None
            and _next_segment(self.last_archived_wal) == self.current_wal
            and self.current_wal_offset == 0
        )
        if caught_up:
            return 0.0
        since = self.last_archived_time or self.stats_reset
        return max((self.measured_at - since).total_seconds(), 0.0)

    @property
    def failing(self) -> bool:
        """The newest archive attempt failed (a failure after the last success)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


def _next_segment(name: str) -> str:
    timeline, log, seg = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    seg += 1
    if seg > 0xFF:
        log, seg = log + 1, 0
    return f"{timeline}{log:08X}{seg:08X}"


def archiver_status(connection: Connection) -> ArchiverStatus:
    with connection.connect(autocommit=True) as conn:
        row = conn.execute(_ARCHIVER).fetchone()
    assert row is not None
    return ArchiverStatus(*row)


def require_archiving(server: str, status: ArchiverStatus) -> None:
    """Refuse a server whose WAL is not archived: a base backup of it could not be recovered
    to any moment but its own end."""
    problems = []
    if status.archive_mode not in ("on", "always"):
        problems.append(f"archive_mode is {status.archive_mode!r} (set archive_mode = on)")
    if status.wal_level not in ("replica", "logical"):
        problems.append(f"wal_level is {status.wal_level!r} (set wal_level = replica)")
    if "archive-push" not in status.archive_command:
        problems.append(
            f"archive_command is {status.archive_command or 'empty'!r}, not pgBackRest's "
            "archive-push (set archive_command = 'pgbackrest --stanza=<stanza> archive-push %p')"
        )
    if problems:
        raise PitrError(
            f"server {server!r} does not archive its WAL: {'; '.join(problems)}; then restart "
            "PostgreSQL"
        )


# --- the recovery window ----------------------------------------------------------------------
@dataclass(frozen=True)
class RecoveryWindow:
    """The moments a restore can reach: every moment inside one of its `stretches` (oldest
    first). A gap in the WAL archive splits the window; its `gaps` say which segments are
    missing and what they make unreachable."""

    stretches: tuple[Stretch, ...]
    gaps: tuple[Gap, ...] = ()

    @property
    def start(self) -> dt.datetime:
        return self.stretches[0].start

    @property
    def end(self) -> dt.datetime:
        return self.stretches[-1].end

    def contains(self, moment: dt.datetime) -> bool:
        return any(stretch.start <= moment <= stretch.end for stretch in self.stretches)

    def describe(self) -> str:
        return ", and ".join(f"{_iso(s.start)} to {_iso(s.end)}" for s in self.stretches)

    def between(self) -> str:
        return ", or ".join(f"between {_iso(s.start)} and {_iso(s.end)}" for s in self.stretches)

    def gap_before(self, moment: dt.datetime) -> Gap | None:
        """The gap that makes `moment` unreachable, if one does."""
        return next(
            (
                gap
                for gap in self.gaps
                if gap.reachable_until is None or gap.reachable_until < moment
                if gap.resumes_at is None or moment < gap.resumes_at
            ),
            None,
        )


def recovery_window(
    info: RepositoryInfo, end: dt.datetime | None, continuity: Continuity, segment_size: int
) -> RecoveryWindow | None:
    """The window from the backups, the archive's end (`end`: the last archived moment) and the
    gaps the repository's listing shows; None when no moment can be reached."""
    if not info.backups:
        return None
    newest = max(filter(None, [end, continuity.newest_archived_at, info.backups[-1].stopped]))
    stretches = reachable_stretches(info.backups, continuity.gaps, newest, segment_size)
    return RecoveryWindow(tuple(stretches), continuity.gaps) if stretches else None


@dataclass(frozen=True)
class ArchiveState:
    """A server's WAL archive as the repository lists it, and the window that follows."""

    continuity: Continuity
    window: RecoveryWindow | None


def observe_archive(
    engine: Engine, info: RepositoryInfo, status: ArchiverStatus | None
) -> ArchiveState:
    """Count the repository's WAL segments and derive the recovery window. Without the server
    (`status` None, the day of the disaster) the window ends at the newest archived segment."""
    segment_size = status.wal_segment_size if status else DEFAULT_SEGMENT_SIZE
    continuity = check_continuity(engine, info, segment_size)
    end = status.last_archived_time if status else None
    return ArchiveState(continuity, recovery_window(info, end, continuity, segment_size))


def backup_for(info: RepositoryInfo, moment: dt.datetime) -> BackupSet | None:
    """The backup a restore to `moment` starts from: the newest one consistent before it."""
    usable = [backup for backup in info.backups if backup.stopped <= moment]
    return usable[-1] if usable else None


def require_in_window(server: str, window: RecoveryWindow | None, moment: dt.datetime) -> None:
    if window is None:
        raise PitrError(
            f"server {server!r} has no base backup it can be restored from yet: take one "
            "(materialize its base_backup) before restoring to a time"
        )
    if window.contains(moment):
        return
    gap = window.gap_before(moment) if window.start <= moment <= window.end else None
    if gap is not None:
        raise PitrError(
            f"server {server!r} cannot be restored to {_iso(moment)}: it lies in a gap of the WAL "
            f"archive ({gap.describe()}); reachable: {window.describe()}; choose a time inside "
            "one of those stretches"
        )
    raise PitrError(
        f"server {server!r} cannot be restored to {_iso(moment)}: its recovery window is "
        f"{window.describe()}; choose a time inside it"
    )


# --- base backups -----------------------------------------------------------------------------
def backup_kind(info: RepositoryInfo, full_today: bool) -> str:
    """Full when the full-backup schedule falls on the day or no full backup exists; else a
    differential against the newest full."""
    has_full = any(backup.kind == "full" for backup in info.backups)
    return "full" if full_today or not has_full else "diff"


def dump_globals(connection: Connection, tools: ClientTools) -> Iterator[bytes]:
    """`pg_dumpall --globals-only` (roles, memberships, tablespaces), streamed; without role
    passwords unless the role may read them (a superuser)."""
    with connection.connect(autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    superuser = bool(row and row[0])
    argv = [tools.program("pg_dumpall"), "--globals-only", f"--dbname={connection.dsn}"]
    if not superuser:
        argv.append("--no-role-passwords")
    process = subprocess.Popen(
        argv,
        env=connection.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        while chunk := process.stdout.read(1 << 16):
            yield chunk
        error = process.stderr.read().decode(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
    if process.returncode != 0:
        raise PitrError(
            connection.redact(
                f"server {connection.database!r}: pg_dumpall --globals-only failed: {error.strip()}"
            )
        )


# --- markers: what a PITR test proves ---------------------------------------------------------
@dataclass(frozen=True)
class MarkerPair:
    """Two rows written around `target`: `before` committed before it, `after` after it."""

    before: str
    after: str
    target: dt.datetime
    wal: str  # the segment holding both, switched out so it is archived


def write_markers(connection: Connection, label: str) -> MarkerPair:
    """Commit a row, take the server's clock as the target, commit another, then switch the WAL
    segment so both reach the archive."""
    before, after = f"{label} before", f"{label} after"
    with connection.connect(autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (label text PRIMARY KEY, "
            "written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute(f"INSERT INTO {MARKER_TABLE} (label) VALUES (%s)", (before,))
        target = _scalar(conn, "SELECT clock_timestamp()")
        time.sleep(0.2)  # the next commit is stamped clearly after the target
        conn.execute(f"INSERT INTO {MARKER_TABLE} (label) VALUES (%s)", (after,))
        wal = _scalar(conn, "SELECT pg_walfile_name(pg_switch_wal())")
    return MarkerPair(before, after, target, wal)


def wait_until_archived(
    server: str, connection: Connection, segment: str, timeout: float = ARCHIVE_WAIT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = archiver_status(connection)
        if status.last_archived_wal and status.last_archived_wal[8:] >= segment[8:]:
            return
        if time.monotonic() > deadline:
            raise PitrError(
                f"server {server!r}: WAL segment {segment} was not archived within {timeout:.0f}"
                f" s (last archived: {status.last_archived_wal or 'none'}, failed attempts: "
                f"{status.failed_count}); archive_command is not pushing to the repository"
            )
        time.sleep(0.5)


def _scalar(conn: psycopg.Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


# --- a restored copy --------------------------------------------------------------------------
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
        copy = RestoredServer(directory, port, _scratch_connection(source, holder, port))
        copy.restore_seconds = restore_seconds
        try:
            bin_dir = server_binaries(engine.server, directory, place.pg_bin_dir)
        except PitrError as error:
            raise RestoreStageError(engine.server, "start", str(error)) from None
        _start(engine, copy, holder, bin_dir, private=True)
        copy.start_seconds = time.monotonic() - started - restore_seconds
        yield copy
    finally:
        if bin_dir is not None:
            stop_copy(engine, directory, bin_dir)
        shutil.rmtree(holder, ignore_errors=True)


def _scratch_connection(source: Connection, socket_dir: Path, port: int) -> Connection:
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


def _start(
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
                if not _scalar(conn, "SELECT pg_is_in_recovery()"):
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


# --- proving a restored copy ------------------------------------------------------------------
@dataclass
class CopyProof:
    """What a restored copy was found to hold."""

    achieved: dt.datetime | None  # the last transaction replayed
    replayed_lsn: str | None
    databases: dict[str, int] = field(default_factory=dict)  # database -> tables read
    unreadable: list[str] = field(default_factory=list)
    markers: set[str] = field(default_factory=set)


def examine(copy: RestoredServer) -> CopyProof:
    with copy.connection.connect(autocommit=True) as conn:
        achieved = _scalar(conn, "SELECT pg_last_xact_replay_timestamp()")
        replayed = _scalar(conn, "SELECT pg_last_wal_replay_lsn()::text")
        exists = _scalar(conn, f"SELECT to_regclass('{MARKER_TABLE}') IS NOT NULL")
        markers = (
            {row[0] for row in conn.execute(f"SELECT label FROM {MARKER_TABLE}")}
            if exists
            else set()
        )
    proof = CopyProof(achieved, replayed, markers=markers)  # type: ignore[arg-type]
    for database in copy.databases():
        _read_tables(copy.connection.for_database(database), database, proof)
    return proof


def _read_tables(connection: Connection, database: str, proof: CopyProof) -> None:
    """Every table of `database` answers a read of its first row."""
    try:
        with connection.connect(autocommit=True) as conn:
            tables = conn.execute(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND c.relpersistence = 'p'"
            ).fetchall()
            for (table,) in tables:
                try:
                    conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
                except psycopg.Error as error:
                    proof.unreadable.append(f"{database}.{table}: {str(error).strip()}")
            proof.databases[database] = len(tables)
    except PostgresError as error:
        proof.unreadable.append(f"{database}: {error}")


# --- the PITR restore test --------------------------------------------------------------------
@dataclass
class PitrTestReport:
    server: str
    markers: MarkerPair
    window: RecoveryWindow | None
    backup: BackupSet
    proof: CopyProof
    restore_seconds: float  # pgbackrest restore
    start_seconds: float  # start, replay and promotion
    total_seconds: float  # from the restore's start to the copy examined: the RTO
    removal_seconds: float  # stopping and deleting the copy

    @property
    def wal_replayed_bytes(self) -> int:
        """WAL replayed on top of the backup: from its start to the last record replayed."""
        if self.proof.replayed_lsn is None:
            return 0
        return _lsn(self.proof.replayed_lsn) - _lsn(self.backup.start_lsn)

    @property
    def recovery_point_error_seconds(self) -> float | None:
        """How far before the target the copy stopped (its last replayed commit)."""
        if self.proof.achieved is None:
            return None
        return (self.markers.target - self.proof.achieved).total_seconds()

    def problems(self) -> list[str]:
        found = []
        if self.markers.before not in self.proof.markers:
            found.append(
                f"the row committed before the target ({self.markers.before!r}) is missing"
            )
        if self.markers.after in self.proof.markers:
            found.append(f"the row committed after the target ({self.markers.after!r}) is present")
        if not self.proof.databases:
            found.append("no database answered")
        return found + self.proof.unreadable


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def target_time(moment: dt.datetime) -> RecoveryTarget:
    return RecoveryTarget("time", moment.astimezone(dt.UTC).isoformat(sep=" "))


def run_pitr_restore_test(
    engine: Engine, source: Connection, place: ScratchPlace
) -> PitrTestReport:
    """Write a row, note the moment, write another; restore the server to that moment on a
    scratch port and prove the first row is there, the second is not and every table reads."""
    require_archiving(engine.server, archiver_status(source))
    markers = write_markers(source, f"pitr-test {dt.datetime.now(dt.UTC).isoformat()}")
    wait_until_archived(engine.server, source, markers.wal)
    info = engine.info()
    window = observe_archive(engine, info, archiver_status(source)).window
    backup = backup_for(info, markers.target)
    gap = window.gap_before(markers.target) if window else None
    if backup is None:
        raise RestoreStageError(
            engine.server,
            "window",
            f"no base backup is consistent before the target {_iso(markers.target)}: take one "
            "(materialize its base_backup) first",
        ).about(markers.target, window, gap)
    # A target outside the window is still tried: the copy's own log is the evidence.
    started = time.monotonic()
    try:
        with restored_copy(engine, source, target_time(markers.target), place) as copy:
            proof = examine(copy)
            total = time.monotonic() - started
    except RestoreStageError as error:
        raise error.about(markers.target, window, gap) from None
    removal = time.monotonic() - started - total
    return PitrTestReport(
        engine.server,
        markers,
        window,
        backup,
        proof,
        copy.restore_seconds,
        copy.start_seconds,
        total,
        removal,
    )


# --- a restore for real -----------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreRequest:
    target: RecoveryTarget
    destination: Path
    port: int | None  # start the copy here (None: leave it stopped)
    confirm_overwrite: str | None  # the server's name, to restore over a stopped cluster


@dataclass(frozen=True)
class RestoreOutcome:
    destination: Path
    backup: BackupSet | None
    port: int | None
    seconds: float


def restore_server(
    engine: Engine, source: Connection, request: RestoreRequest, pg_bin_dir: str | None
) -> RestoreOutcome:
    """Restore `engine`'s server into `request.destination` (a new directory, or a stopped
    cluster's when confirmed by name), optionally start it; never over a running server."""
    destination = request.destination
    _refuse_overwrite(engine.server, destination, request.confirm_overwrite)
    info = engine.info()
    backup = info.backups[-1] if info.backups else None
    if request.target.kind == "time":
        moment = _aware(engine.server, str(request.target.value))
        require_in_window(engine.server, window_for(engine, info, source), moment)
        backup = backup_for(info, moment)
    if request.port is not None:
        require_free_port(engine.server, request.port)
    started = time.monotonic()
    replacing = destination.exists() and any(destination.iterdir())
    if not destination.exists():
        destination.mkdir(mode=0o700, parents=True)
        engine.give(destination)
    delta = ["--delta"] if replacing else []
    engine.run("restore", *delta, local=True, PG1_PATH=str(destination), **request.target.options())
    if request.port is not None:
        copy = RestoredServer(
            destination, request.port, _scratch_connection(source, destination, request.port)
        )
        bin_dir = server_binaries(engine.server, destination, pg_bin_dir)
        _start(engine, copy, destination, bin_dir, private=False)
    return RestoreOutcome(destination, backup, request.port, time.monotonic() - started)


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


def window_for(engine: Engine, info: RepositoryInfo, source: Connection) -> RecoveryWindow | None:
    """The window, its end from the server's archiver; if the server is down (the day of the
    disaster), from the newest segment in the repository."""
    try:
        status: ArchiverStatus | None = archiver_status(source)
    except PostgresError:
        status = None
    return observe_archive(engine, info, status).window


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


# --- check outcomes ---------------------------------------------------------------------------
def window_metadata(window: RecoveryWindow | None) -> dict[str, object]:
    if window is None:
        return {"recovery_window": "none: no base backup can be restored from yet"}
    metadata: dict[str, object] = {
        "recovery_window": f"you can restore to any moment {window.between()}",
        "recovery_window_start": _iso(window.start),
        "recovery_window_end": _iso(window.end),
    }
    if window.gaps:
        metadata["recovery_window_stretches"] = [
            f"{_iso(stretch.start)} to {_iso(stretch.end)}" for stretch in window.stretches
        ]
        metadata["wal_gaps"] = [gap.describe() for gap in window.gaps]
    return metadata


def backup_verified(
    server: str, backup: BackupSet, info: RepositoryInfo, problems: list[str]
) -> CheckOutcome:
    listed = any(entry.label == backup.label for entry in info.backups)
    if not listed:
        problems = [f"backup {backup.label} is not listed by the repository", *problems]
    passed = not problems
    return CheckOutcome(
        names.BASE_BACKUP_VERIFIED,
        passed,
        f"pgbackrest verify found every file of {server}'s repository intact"
        if passed
        else f"{server}'s repository failed verification: {problems[0]}",
        {"label": backup.label, "problems": problems, "backups_in_repository": len(info.backups)},
    )


def wal_continuity(server: str, continuity: Continuity) -> CheckOutcome:
    gaps = continuity.gaps
    timelines = ", ".join(str(timeline) for timeline in continuity.timelines)
    return CheckOutcome(
        names.WAL_CONTINUOUS,
        not gaps,
        f"every WAL segment from {continuity.start} (start of the oldest kept backup) to "
        f"{continuity.newest} is in the repository ({continuity.needed} segments, timeline "
        f"{timelines})"
        if not gaps
        else f"{server}'s WAL archive has a gap: {gaps[0].describe()}",
        {
            "wal_start": continuity.start or "none",
            "wal_newest": continuity.newest or "none",
            "segments_needed": continuity.needed,
            "segments_missing": continuity.missing,
            "timelines": timelines,
            "gaps": [gap.describe() for gap in gaps],
        },
    )


def archive_lag(server: str, status: ArchiverStatus, limit_minutes: float) -> CheckOutcome:
    lag = status.lag_seconds
    passed = lag <= limit_minutes * 60
    return CheckOutcome(
        names.ARCHIVE_LAG,
        passed,
        f"the newest WAL not yet archived is at most {lag:.0f} s old (limit "
        f"{limit_minutes:g} min): the measured RPO"
        if passed
        else f"{server}'s WAL archive lags {lag / 60:.1f} min behind (limit {limit_minutes:g} "
        "min); WAL written since then would be lost with the server",
        {
            "archive_lag_seconds": round(lag, 1),
            "limit_seconds": limit_minutes * 60,
            "last_archived_wal": status.last_archived_wal or "none",
            "last_archived_time": _iso(status.last_archived_time)
            if status.last_archived_time
            else "never",
            "current_wal": status.current_wal,
        },
    )


def archiving_succeeds(
    server: str, status: ArchiverStatus, first_archived_at: dt.datetime | None
) -> CheckOutcome:
    passed = not status.failing
    return CheckOutcome(
        names.ARCHIVING_SUCCEEDS,
        passed,
        f"archive_command succeeded last ({status.archived_count} segments archived, "
        f"{status.failed_count} failures since {_iso(status.stats_reset)}"
        f"{_failures_note(status, first_archived_at)})"
        if passed
        else f"{server}'s archive_command is failing: segment {status.last_failed_wal} failed "
        f"at {_iso(status.last_failed_time) if status.last_failed_time else '?'}; see the "
        "PostgreSQL log",
        {
            "archived_count": status.archived_count,
            "failed_count": status.failed_count,
            "failures_counted_since": _iso(status.stats_reset),
            "last_failed_wal": status.last_failed_wal or "none",
            "last_failed_time": _iso(status.last_failed_time)
            if status.last_failed_time
            else "none",
        },
    )


def _failures_note(status: ArchiverStatus, first_archived_at: dt.datetime | None) -> str:
    """Say when past failures all happened before the repository held anything: archiving was
    switched on before the repository was created, not a failure of the archive in use."""
    if not status.failed_count or status.last_failed_time is None or first_archived_at is None:
        return ""
    if status.last_failed_time < first_archived_at:
        return (
            f"; all of them before the repository's first segment was stored "
            f"({_iso(first_archived_at)}): archiving was on before the repository existed"
        )
    return f"; the newest at {_iso(status.last_failed_time)}, since recovered"


def pitr_outcome(report: PitrTestReport) -> CheckOutcome:
    problems = report.problems()
    error = report.recovery_point_error_seconds
    metadata = {
        "target_time": _iso(report.markers.target, "milliseconds"),
        "achieved_recovery_point": _iso(report.proof.achieved, "milliseconds")
        if report.proof.achieved
        else "?",
        "recovery_point_error_seconds": round(error, 3) if error is not None else "?",
        "restore_duration_seconds": round(report.total_seconds, 3),
        "pgbackrest_restore_seconds": round(report.restore_seconds, 3),
        "replay_and_promotion_seconds": round(report.start_seconds, 3),
        "removal_seconds": round(report.removal_seconds, 3),
        "restored_from_backup": report.backup.label,
        "wal_replayed_bytes": report.wal_replayed_bytes,
        "databases": [
            f"{name}: {tables} tables read" for name, tables in report.proof.databases.items()
        ],
        "problems": problems,
        **({"failed_stage": "validation"} if problems else {}),
        **window_metadata(report.window),
    }
    return CheckOutcome(
        names.PITR_RESTORE_PROVEN,
        not problems,
        f"{report.server} restored to {_iso(report.markers.target)} in "
        f"{report.total_seconds:.1f} s: the row committed before the target is there, the one "
        f"after it is not, every database answers ({', '.join(report.proof.databases)})"
        if not problems
        else f"PITR restore test of {report.server} failed: {problems[0]}",
        metadata,
    )


def pitr_failure_outcome(error: RestoreStageError) -> CheckOutcome:
    """A PITR restore test that failed before its copy could be examined: the stage, the
    reason and the copy's own last log lines are the evidence."""
    return CheckOutcome(
        names.PITR_RESTORE_PROVEN,
        False,
        f"PITR restore test of {error.server} failed at {error.stage}: {error.reason}",
        {
            "failed_stage": error.stage,
            "reason": error.reason,
            "target_time": _iso(error.target, "milliseconds") if error.target else "?",
            "postgres_log": error.log_lines,
            **window_metadata(error.window),
        },
    )


# --- retention --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpiryPlan:
    """Which full backups the policy keeps (with the backups built on them) and which go;
    `engine_says` is pgBackRest's own dry-run account of what expiring them removes."""

    keep: dict[str, tuple[str, ...]]  # full backup label -> why it is kept
    expire: dict[str, str]  # full backup label -> why it goes
    engine_says: list[str]


def plan_expiry(engine: Engine, policy: RetentionPolicy) -> ExpiryPlan:
    """Apply the GFS policy to the full backups (one per day counts: the newest of the day),
    then ask pgBackRest what expiring the others would remove. Deletes nothing."""
    fulls = [backup for backup in engine.info().backups if backup.kind == "full"]
    newest_of_day: dict[dt.date, BackupSet] = {}
    for backup in fulls:  # oldest first: a later one of the same day replaces it
        newest_of_day[backup.stopped.date()] = backup
    decisions = decide([BackupStatus(day, True) for day in newest_of_day], policy)
    keep = {newest_of_day[d.day].label: d.reasons for d in decisions if d.keep}
    expire = {newest_of_day[d.day].label: d.reasons[0] for d in decisions if not d.keep}
    for backup in fulls:
        if backup.label not in keep and backup.label not in expire:
            newest = newest_of_day[backup.stopped.date()].label
            expire[backup.label] = f"a newer full backup of the same day ({newest}) stands for it"
    engine_says = engine.expire(sorted(expire), dry_run=True) if expire else []
    oldest_kept = next((backup for backup in fulls if backup.label in keep), None)
    if oldest_kept is not None:
        engine_says.append(
            f"then WAL before {oldest_kept.wal_start} (start of {oldest_kept.label}, the oldest "
            "kept full backup) is removed"
        )
    return ExpiryPlan(keep, expire, engine_says)


def apply_expiry(engine: Engine, plan: ExpiryPlan) -> list[str]:
    """Expire exactly the plan's full backups (pgBackRest removes those built on them), then
    the WAL older than the oldest kept backup. Only pgBackRest deletes from its repository."""
    removed = engine.expire(sorted(plan.expire), dry_run=False) if plan.expire else []
    fulls = {backup.label for backup in engine.info().backups if backup.kind == "full"}
    if fulls != set(plan.keep):
        raise PitrError(
            f"server {engine.server!r}: after expiring the plan the repository holds full "
            f"backups {sorted(fulls)}, not the kept {sorted(plan.keep)}; it changed meanwhile, "
            "so no WAL was expired: run the prune again"
        )
    return removed + engine.expire_archive(len(fulls))
