"""Marker rows: a row committed just before a target moment and one just after, the evidence a
restore to that moment replayed exactly up to it."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from backup_pipelines.core.common.postgres_client import Connection, scalar

MARKER_TABLE = "backup_pipelines_pitr_marker"


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
        target = scalar(conn, "SELECT clock_timestamp()")
        time.sleep(0.2)  # the next commit is stamped clearly after the target
        conn.execute(f"INSERT INTO {MARKER_TABLE} (label) VALUES (%s)", (after,))
        wal = scalar(conn, "SELECT pg_walfile_name(pg_switch_wal())")
    return MarkerPair(before, after, target, wal)
