"""The PITR restore test: write marker rows around a moment, restore the server to it on a scratch
copy, and prove the copy holds exactly what was committed before it and every table reads."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import psycopg

from backup_pipelines.core.common.postgres_client import Connection, PostgresError, scalar
from backup_pipelines.core.servers.archiver import (
    archiver_status,
    require_archiving,
    wait_until_archived,
)
from backup_pipelines.core.servers.errors import RestoreStageError
from backup_pipelines.core.servers.markers import MARKER_TABLE, MarkerPair, write_markers
from backup_pipelines.core.servers.pgbackrest import BackupSet, Engine, RecoveryTarget
from backup_pipelines.core.servers.scratch import RestoredServer, ScratchPlace, restored_copy
from backup_pipelines.core.servers.wal import lsn_number, utc_text
from backup_pipelines.core.servers.window import RecoveryWindow, backup_for, observe_archive


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
        achieved = scalar(conn, "SELECT pg_last_xact_replay_timestamp()")
        replayed = scalar(conn, "SELECT pg_last_wal_replay_lsn()::text")
        exists = scalar(conn, f"SELECT to_regclass('{MARKER_TABLE}') IS NOT NULL")
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
        return lsn_number(self.proof.replayed_lsn) - lsn_number(self.backup.start_lsn)

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
    backup = backup_for(info.backups, markers.target)
    gap = window.gap_before(markers.target) if window else None
    if backup is None:
        raise RestoreStageError(
            engine.server,
            "window",
            f"no base backup is consistent before the target {utc_text(markers.target)}: take one "
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
