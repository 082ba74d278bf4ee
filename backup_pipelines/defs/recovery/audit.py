"""The audit report: per database and day, what an auditor asks for, from Dagster's own records
(so it matches the UI): backup taken (snapshot, size, checksum), archived, every check's
outcome, restore test (duration, rows compared) and retention decisions."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pandas as pd
from dagster import AssetKey, DagsterInstance

from backup_pipelines import names
from backup_pipelines.core.recovery.objectives import history_by_day
from backup_pipelines.core.servers.pgbackrest import BackupSet
from backup_pipelines.core.servers.restore_points import RestorePoint, backup_before
from backup_pipelines.core.servers.wal import utc_text
from backup_pipelines.defs.records import (
    all_records,
    check_history,
    evaluated_at,
    newest_by_day,
    newest_by_partition,
)

_HISTORY = 100_000  # evaluations of an objective: every 15 minutes for years


def _metadata(record: Any, event: str) -> dict[str, Any]:
    data = getattr(record, event) if record is not None else None
    return {k: v.value for k, v in data.metadata.items()} if data is not None else {}


def _materializations(instance: DagsterInstance, key: AssetKey) -> dict[str, Any]:
    return newest_by_partition(all_records(instance.fetch_materializations, key))


def _retention_notes(instance: DagsterInstance, database: str) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    for step in (names.ARCHIVE, names.DUMP):
        key = names.database_key(database, step)
        for record in all_records(instance.fetch_observations, key):
            observed = record.asset_observation
            if observed and (observed.description or "").startswith("retention:"):
                meta = _metadata(record, "asset_observation")
                note = f"{step}: {meta.get('action')} ({meta.get('reason')})"
                notes.setdefault(record.partition_key or "", []).append(note)
    return notes


def audit_table(
    instance: DagsterInstance, databases: list[str], first_day: dt.date, last_day: dt.date
) -> pd.DataFrame:
    days = [
        (first_day + dt.timedelta(days=n)).isoformat()
        for n in range((last_day - first_day).days + 1)
    ]
    rows = []
    for database in databases:
        keys = {step: names.database_key(database, step) for step in names.DATABASE_CHECKS}
        dumps = _materializations(instance, keys[names.DUMP])
        archives = _materializations(instance, names.database_key(database, names.ARCHIVE))
        checks = {
            check: newest_by_day(instance, keys[step], check)
            for step, step_checks in names.DATABASE_CHECKS.items()
            for check in step_checks
        }
        retention = _retention_notes(instance, database)
        for day in days:
            dump = _metadata(dumps.get(day), "asset_materialization")
            archive = _metadata(archives.get(day), "asset_materialization")
            restore = checks[names.RESTORED_DATA_MATCHES].get(day)
            restore_meta = {k: v.value for k, v in restore.metadata.items()} if restore else {}
            row: dict[str, Any] = {
                "database": database,
                "day": day,
                "snapshot_taken_at": dump.get("snapshot_taken_at", ""),
                "size_bytes": dump.get("size_bytes"),
                "sha256": dump.get("sha256", ""),
                "archived": bool(archive),
                "archive_uri": archive.get("uri", ""),
            }
            for check, outcomes in checks.items():
                evaluation = outcomes.get(day)
                row[check] = (
                    "" if evaluation is None else ("passed" if evaluation.passed else "FAILED")
                )
            row["verified"] = all(row[check] == "passed" for check in names.VERIFYING_CHECKS)
            row["restore_seconds"] = restore_meta.get("restore_duration_seconds")
            row["rows_compared"] = restore_meta.get("rows_compared")
            row["retention"] = "; ".join(retention.get(day, []))
            rows.append(row)
    # Nullable integers: a day without a backup has no size, not a size of NaN.
    return pd.DataFrame(rows).astype({"size_bytes": "Int64", "rows_compared": "Int64"})


def restore_points_table(
    points: list[RestorePoint], backups: dict[str, list[BackupSet] | str]
) -> pd.DataFrame:
    """Every restore point ever recorded, and whether a restore can still reach it: from which
    backup, or expired (its WAL went with the backups before it). `backups` holds each server's
    kept backups, or why they could not be listed."""
    rows = []
    for point in points:
        kept = backups[point.server]
        if isinstance(kept, str):
            status = f"unknown: {kept}"
        elif (backup := backup_before(kept, point.lsn)) is not None:
            status = f"reachable, from base backup {backup.label}"
        else:
            oldest = f" (the oldest kept ends at {kept[0].stop_lsn})" if kept else ""
            status = f"expired: no kept base backup ends before it{oldest}"
        rows.append(
            {
                "server": point.server,
                "restore_point": point.name,
                "made_at": utc_text(point.created_at),
                "lsn": point.lsn,
                "requested_by": point.requested_by,
                "note": point.note,
                "status": status,
            }
        )
    columns = ["server", "restore_point", "made_at", "lsn", "requested_by", "note", "status"]
    return pd.DataFrame(rows, columns=columns)


EXPORT_COLUMNS = [
    "database",
    "export_id",
    "made_at",
    "requested_by",
    "reason",
    "rows",
    "files",
    "verified",
    "deleted_at",
]


def exports_table(instance: DagsterInstance, databases: list[str]) -> pd.DataFrame:
    """Every data export recorded: who asked, why, when, what it holds, whether it read back,
    and when the retention run deleted it."""
    rows = []
    for database in databases:
        key = names.database_key(database, names.EXPORTS)
        deleted = {
            record.partition_key: utc_text(dt.datetime.fromtimestamp(record.timestamp, dt.UTC))
            for record in all_records(instance.fetch_observations, key)
            if _metadata(record, "asset_observation").get("action") == "deleted"
        }
        verified = newest_by_day(instance, key, names.EXPORT_VERIFIED)
        for export_id, record in _materializations(instance, key).items():
            made = _metadata(record, "asset_materialization")
            rows.append(
                {
                    "database": database,
                    "export_id": export_id,
                    "made_at": utc_text(dt.datetime.fromtimestamp(record.timestamp, dt.UTC)),
                    "requested_by": made.get("requested_by", ""),
                    "reason": made.get("reason", ""),
                    "rows": made.get("rows", ""),
                    "files": str(made.get("files", "")).replace("\n", "; "),
                    "verified": verified[export_id].passed if export_id in verified else "",
                    "deleted_at": deleted.get(export_id, ""),
                }
            )
    return pd.DataFrame(rows, columns=EXPORT_COLUMNS).sort_values(["made_at", "export_id"])


def objectives_table(
    instance: DagsterInstance, first: dt.date, last: dt.date, now: dt.datetime
) -> pd.DataFrame:
    """Per day, database or server and objective: was it met all day, and for how long was
    it not (each evaluation's verdict holds until the next)."""
    evaluations = []
    for objective, check in names.OBJECTIVE_CHECKS.items():
        key = names.key(names.RECOVERY_OBJECTIVES)
        for record in check_history(instance, key, check, limit=_HISTORY):
            shown = record.evaluation.metadata.get("targets") if record.evaluation else None
            at = evaluated_at(record)
            if shown is None or at is None:
                continue
            verdicts = {target: bool(figures["met"]) for target, figures in shown.value.items()}
            evaluations.append((at, objective, verdicts))
    rows = [
        {
            "day": entry.day,
            "target": entry.target,
            "objective": entry.objective.upper(),
            "met_all_day": entry.met_all_day,
            "minutes_not_met": round(entry.seconds_not_met / 60, 2),
            "evaluations": entry.evaluations,
        }
        for entry in history_by_day(evaluations, now)
        if first.isoformat() <= entry.day <= last.isoformat()
    ]
    columns = ["day", "target", "objective", "met_all_day", "minutes_not_met", "evaluations"]
    return pd.DataFrame(rows, columns=columns)


def coverage(table: pd.DataFrame) -> dict[str, float]:
    if table.empty:
        return {"days_with_verified_backup_pct": 0.0, "days_restore_tested_pct": 0.0}
    return {
        "days_with_verified_backup_pct": round(100 * float(table["verified"].mean()), 1),
        "days_restore_tested_pct": round(
            100 * float((table[names.RESTORED_DATA_MATCHES] == "passed").mean()), 1
        ),
    }


def render_html(
    table: pd.DataFrame,
    summary: dict[str, float],
    period: str,
    points: pd.DataFrame,
    objectives: pd.DataFrame,
) -> str:
    body = table.to_html(index=False, na_rep="", escape=True, border=0)
    restore_points = _html_or(points, "None recorded.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Backup audit report {html.escape(period)}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; font-size: .85rem; }}
th, td {{ padding: .2rem .6rem; border-bottom: 1px solid #dde; text-align: left; }}</style>
</head><body>
<h1>Backup audit report, {html.escape(period)}</h1>
<p>Days with a verified backup: <b>{summary["days_with_verified_backup_pct"]}%</b>;
days restore-tested: <b>{summary["days_restore_tested_pct"]}%</b>
(per database and day, from Dagster's records).</p>
{body}
<h2>Restore points</h2>
<p>Every named restore point made through this project, and whether a restore can still reach
it; an expired one is never offered as a target.</p>
{restore_points}
<h2>Recovery objectives</h2>
<p>Per day, each database's and server's promised RPO and RTO: met all day, or for how many
minutes not (from every evaluation of rpo_met and rto_met).</p>
{_html_or(objectives, "No objectives promised, or none evaluated yet.")}
</body></html>
"""


def _html_or(table: pd.DataFrame, empty: str) -> str:
    if table.empty:
        return f"<p>{html.escape(empty)}</p>"
    return table.to_html(index=False, na_rep="", escape=True, border=0)
