"""Prometheus metrics per database, as a node-exporter textfile (rewritten atomically)."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from backup_pipelines import names
from backup_pipelines.defs.alerts.health import (
    last_replicated_at,
    last_restore_test,
    last_verified_at,
    replica_lag_days,
)
from backup_pipelines.defs.records import check_history, latest_metadata

_HELP = {
    "last_success_timestamp_seconds": "When an archive was last verified (Unix time).",
    "last_backup_size_bytes": "Size of the newest verified archive.",
    "last_backup_duration_seconds": "How long the newest dump took.",
    "last_restore_test_duration_seconds": "Restore duration (RTO) of the newest restore test.",
    "last_restore_test_success": "1 if the newest restore test passed, else 0.",
    "storage_bytes": "Bytes of dumps, archives and references in storage.",
    "replica_last_success_timestamp_seconds": "When a copy in the replica store was last "
    "proved (Unix time).",
    "replica_lag_days": "Days the newest proved replica is behind the newest verified archive.",
}
# Per server (label server=): point-in-time recovery.
_SERVER_HELP = {
    "wal_archive_lag_seconds": "Age of the oldest WAL not yet archived, at the last look (RPO).",
    "wal_archive_repo2_lag_seconds": "Age of the oldest WAL not yet in the second repository.",
    "wal_archive_failed_count": "Failed archive_command attempts since the statistics reset.",
    "wal_archive_missing_segments": "WAL segments missing from the repository (gaps).",
    "recovery_window_start_timestamp_seconds": "Earliest moment the server can be restored to.",
    "recovery_window_end_timestamp_seconds": "Latest moment the server can be restored to.",
    "last_base_backup_size_bytes": "Database size of the newest base backup.",
    "last_pitr_restore_test_success": "1 if the newest PITR restore test passed, else 0.",
    "last_pitr_restore_test_duration_seconds": "RTO of the newest PITR restore test.",
}


# Per target (label target="database/<name>" or "server/<name>"): the recovery objectives.
_OBJECTIVE_HELP = {
    "rpo": "Achieved RPO: the age of the newest verified recovery point (see README).",
    "rto": "Achieved RTO: the newest passed restore test, scaled as the README says.",
}


def objective_lines(instance: DagsterInstance) -> list[str]:
    """backup_pipelines_rpo_seconds, _rto_seconds and _objective_met, from the newest
    evaluation of the objectives' checks (none: no objectives promised)."""
    latest = {}
    for objective, check in names.OBJECTIVE_CHECKS.items():
        history = check_history(instance, names.key(names.RECOVERY_OBJECTIVES), check)
        evaluation = history[0].evaluation if history else None
        shown = evaluation.metadata.get("targets") if evaluation else None
        latest[objective] = shown.value if shown is not None else {}
    if not any(latest.values()):
        return []
    lines = []
    for objective, targets in latest.items():
        metric = f"backup_pipelines_{objective}_seconds"
        lines += [f"# HELP {metric} {_OBJECTIVE_HELP[objective]}", f"# TYPE {metric} gauge"]
        lines += [
            f'{metric}{{target="{target}"}} {figures["achieved_seconds"]:.15g}'
            for target, figures in sorted(targets.items())
            if figures.get("achieved_seconds") is not None
        ]
    metric = "backup_pipelines_objective_met"
    lines += [
        f"# HELP {metric} 1 if the promised objective (objective=rpo or rto) is met, else 0.",
        f"# TYPE {metric} gauge",
    ]
    for objective, targets in latest.items():
        lines += [
            f'{metric}{{target="{target}",objective="{objective}"}} {int(bool(figures["met"]))}'
            for target, figures in sorted(targets.items())
        ]
    return lines


def _latest_metadata(instance: DagsterInstance, key: AssetKey) -> dict[str, object]:
    return latest_metadata(instance, key)[0]


def metric_values(
    instance: DagsterInstance, databases: list[str], servers: list[str], *, replicated: bool = False
) -> dict[str, dict[str, float]]:
    """metric name -> database (or server) -> value, for what is known."""
    values: dict[str, dict[str, float]] = {name: {} for name in [*_HELP, *_SERVER_HELP]}
    for server in servers:
        for name, value in _server_values(instance, server).items():
            values[name][server] = value
    storage = _latest_metadata(instance, names.key(names.STORAGE_USAGE))
    for db in databases:
        verified = last_verified_at(instance, db)
        if verified:
            values["last_success_timestamp_seconds"][db] = verified.timestamp()
        size = _latest_metadata(instance, names.database_key(db, names.VERIFICATION)).get(
            "size_bytes"
        )
        if isinstance(size, int | float):
            values["last_backup_size_bytes"][db] = size
        dump = _latest_metadata(instance, names.database_key(db, names.DUMP)).get("dump_seconds")
        if isinstance(dump, int | float):
            values["last_backup_duration_seconds"][db] = dump
        tested = last_restore_test(instance, db)
        if tested is not None and tested.evaluation is not None:
            evaluation = tested.evaluation
            values["last_restore_test_success"][db] = float(evaluation.passed)
            duration = evaluation.metadata.get("restore_duration_seconds")
            if duration is not None:
                values["last_restore_test_duration_seconds"][db] = float(duration.value)
        if isinstance(storage.get(f"{db}_bytes"), int):
            values["storage_bytes"][db] = storage[f"{db}_bytes"]
        if replicated:
            for name, value in _replica_values(instance, db).items():
                values[name][db] = value
    return values


def _replica_values(instance: DagsterInstance, database: str) -> dict[str, float]:
    found: dict[str, float] = {}
    replicated = last_replicated_at(instance, database)
    if replicated:
        found["replica_last_success_timestamp_seconds"] = replicated.timestamp()
    lag = replica_lag_days(instance, database)
    if lag is not None:
        found["replica_lag_days"] = float(lag)
    return found


def _server_values(instance: DagsterInstance, server: str) -> dict[str, float]:
    found: dict[str, float] = {}
    archive = _latest_metadata(instance, names.server_key(server, names.WAL_ARCHIVE))
    for name, field in [
        ("wal_archive_lag_seconds", "archive_lag_seconds"),
        ("wal_archive_failed_count", "failed_count"),
        ("wal_archive_missing_segments", "wal_missing_segments"),
    ]:
        if field in archive:
            found[name] = float(str(archive[field]).replace(",", ""))
    second = _latest_metadata(instance, names.server_key(server, names.WAL_ARCHIVE_REPO2))
    if "archive_lag_seconds" in second:
        found["wal_archive_repo2_lag_seconds"] = float(str(second["archive_lag_seconds"]))
    for edge in ("start", "end"):
        moment = archive.get(f"recovery_window_{edge}")
        if isinstance(moment, str):
            found[f"recovery_window_{edge}_timestamp_seconds"] = dt.datetime.fromisoformat(
                moment
            ).timestamp()
    backup = _latest_metadata(instance, names.server_key(server, names.BASE_BACKUP))
    if isinstance(backup.get("size_bytes"), int):
        found["last_base_backup_size_bytes"] = backup["size_bytes"]
    test_key = names.server_key(server, names.PITR_RESTORE_TEST)
    tested = check_history(instance, test_key, names.PITR_RESTORE_PROVEN)
    if tested and tested[0].evaluation is not None:
        evaluation = tested[0].evaluation
        found["last_pitr_restore_test_success"] = float(evaluation.passed)
        duration = evaluation.metadata.get("restore_duration_seconds")
        if duration is not None:
            found["last_pitr_restore_test_duration_seconds"] = float(duration.value)
    return found


def render(
    values: dict[str, dict[str, float]], open_problems: int, extra: list[str] | None = None
) -> str:
    """The textfile: `values` per database or server, `extra` lines as they are."""
    lines = []
    for name, by_subject in values.items():
        metric = f"backup_pipelines_{name}"
        label = "server" if name in _SERVER_HELP else "database"
        help_text = _SERVER_HELP.get(name) or _HELP[name]
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [
            f'{metric}{{{label}="{subject}"}} {value:.15g}'
            for subject, value in sorted(by_subject.items())
        ]
    lines += [
        "# HELP backup_pipelines_open_problems Announced problems not cleared yet.",
        "# TYPE backup_pipelines_open_problems gauge",
        f"backup_pipelines_open_problems {open_problems}",
        *(extra or []),
    ]
    return "\n".join(lines) + "\n"


def write_textfile(path: str, text: str) -> None:
    """Write next to `path` and rename, so node-exporter never reads half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.chmod(temp, 0o644)
    os.replace(temp, target)
