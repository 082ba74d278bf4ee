"""The servers' check outcomes: base backup verified, WAL continuous, archive lag, archiving
succeeds and the PITR restore test, each with its evidence."""

from __future__ import annotations

import datetime as dt

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.servers.archiver import ArchiveLag, ArchiverStatus
from backup_pipelines.core.servers.errors import RestoreStageError
from backup_pipelines.core.servers.pgbackrest import BackupSet, RepositoryInfo
from backup_pipelines.core.servers.pitr_test import PitrTestReport
from backup_pipelines.core.servers.wal import Continuity, utc_text
from backup_pipelines.core.servers.window import window_metadata


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


def wal_continuity(
    server: str, continuity: Continuity, where: str = "the repository"
) -> CheckOutcome:
    gaps = continuity.gaps
    timelines = ", ".join(str(timeline) for timeline in continuity.timelines)
    return CheckOutcome(
        names.WAL_CONTINUOUS,
        not gaps,
        f"every WAL segment from {continuity.start} (start of the oldest kept backup) to "
        f"{continuity.newest} is in {where} ({continuity.needed} segments, timeline "
        f"{timelines})"
        if not gaps
        else f"{server}'s WAL archive in {where} has a gap: {gaps[0].describe()}",
        {
            "wal_start": continuity.start or "none",
            "wal_newest": continuity.newest or "none",
            "segments_needed": continuity.needed,
            "segments_missing": continuity.missing,
            "timelines": timelines,
            "gaps": [gap.describe() for gap in gaps],
        },
    )


def archive_lag(server: str, lag: ArchiveLag, limit_minutes: float) -> CheckOutcome:
    passed = lag.seconds <= limit_minutes * 60
    return CheckOutcome(
        names.ARCHIVE_LAG,
        passed,
        f"the newest WAL not yet in {lag.where} is at most {lag.seconds:.0f} s old (limit "
        f"{limit_minutes:g} min): the measured RPO"
        if passed
        else f"{server}'s WAL in {lag.where} lags {lag.seconds / 60:.1f} min behind (limit "
        f"{limit_minutes:g} min); the WAL written since {lag.newest_wal or 'archiving began'} is "
        "not there",
        {
            "archive_lag_seconds": round(lag.seconds, 1),
            "limit_seconds": limit_minutes * 60,
            "last_archived_wal": lag.newest_wal or "none",
            "last_archived_time": utc_text(lag.newest_at) if lag.newest_at else "never",
            "current_wal": lag.current_wal,
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
        f"{status.failed_count} failures since {utc_text(status.stats_reset)}"
        f"{_failures_note(status, first_archived_at)})"
        if passed
        else f"{server}'s archive_command is failing: segment {status.last_failed_wal} failed "
        f"at {utc_text(status.last_failed_time) if status.last_failed_time else '?'}; see the "
        "PostgreSQL log",
        {
            "archived_count": status.archived_count,
            "failed_count": status.failed_count,
            "failures_counted_since": utc_text(status.stats_reset),
            "last_failed_wal": status.last_failed_wal or "none",
            "last_failed_time": utc_text(status.last_failed_time)
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
            f"({utc_text(first_archived_at)}): archiving was on before the repository existed"
        )
    return f"; the newest at {utc_text(status.last_failed_time)}, since recovered"


def pitr_outcome(report: PitrTestReport) -> CheckOutcome:
    problems = report.problems()
    error = report.recovery_point_error_seconds
    metadata = {
        "target_time": utc_text(report.markers.target, "milliseconds"),
        "achieved_recovery_point": utc_text(report.proof.achieved, "milliseconds")
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
        f"{report.server} restored to {utc_text(report.markers.target)} in "
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
            "target_time": utc_text(error.target, "milliseconds") if error.target else "?",
            "postgres_log": error.log_lines,
            **window_metadata(error.window),
        },
    )
