"""recovery_objectives: every database's and server's promised RPO and RTO against what the
newest evidence proves (core/recovery/objectives.py holds the model), as the checks rpo_met and
rto_met; re-evaluated every 15 minutes and after each verification, restore test, base backup
and WAL observation."""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.common.config import BackupConfig, ConfigError
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.recovery.objectives import (
    DATABASE,
    OBJECTIVES,
    SERVER,
    Figure,
    Promise,
    Standing,
    database_rpo,
    database_rto,
    duration_text,
    server_rpo_live,
    server_rpo_recorded,
    server_rto,
)
from backup_pipelines.core.servers.archiver import archiver_status
from backup_pipelines.core.servers.wal import Segment, lsn_number
from backup_pipelines.defs.records import (
    check_history,
    evaluated_at,
    latest_metadata,
    newest_verified_day,
)
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_spec


def promises(config: BackupConfig) -> dict[tuple[str, str], Promise]:
    """(kind, name) -> what it promises, for every database and server that promises."""
    found = {}
    for kind, plural in ((DATABASE, "databases"), (SERVER, "servers")):
        for name in getattr(config, plural):
            objectives = config.objectives_for(plural, name)
            if objectives and objectives.rpo_minutes and objectives.rto_minutes:
                found[(kind, name)] = Promise(
                    objectives.rpo_minutes, objectives.rto_minutes, objectives.severity == "error"
                )
    return found


def evidence(config: BackupConfig) -> list[AssetKey]:
    """What the achieved figures rest on: a new materialization of any of these is a reason to
    evaluate again."""
    return [
        *(
            names.database_key(database, step)
            for database in config.databases
            for step in (names.VERIFICATION, names.RESTORE_TEST)
        ),
        *(
            names.server_key(server, step)
            for server in config.servers
            for step in (names.BASE_BACKUP, names.WAL_ARCHIVE, names.PITR_RESTORE_TEST)
        ),
    ]


def standings(
    instance: DagsterInstance, settings: BackupSettings, now: dt.datetime
) -> list[Standing]:
    """Each promise against the newest evidence in the records (and, for servers, the
    archiver's state now)."""
    config = settings.config()
    promised = promises(config)
    behind = {name for (kind, name) in promised if kind == SERVER} | {
        config.databases[name].server for (kind, name) in promised if kind == DATABASE
    }
    servers = {
        server: _server_figures(instance, settings, server, now)
        for server in behind
        if server in config.servers
    }
    found = []
    for (kind, name), promise in promised.items():
        if kind == SERVER:
            rpo, rto = servers[name]
        else:
            server = str(config.databases[name].server)
            server_rpo = servers[server][0] if server in servers else None
            behind_it = (server, server_rpo) if server_rpo else None
            newest = newest_verified_day(instance, name)
            rpo = database_rpo(now, _verified_point(instance, name, newest), behind_it)
            rto = _database_rto(instance, name, newest)
        found.append(Standing(kind, name, promise, rpo, rto))
    return found


def _verified_point(
    instance: DagsterInstance, database: str, day: str | None
) -> tuple[str, dt.datetime] | None:
    """The newest verified archive's day (`day`) and the moment its snapshot was taken."""
    if day is None:
        return None
    dump, _ = latest_metadata(instance, names.database_key(database, names.DUMP), day)
    taken = dump.get("snapshot_taken_at")
    return (day, dt.datetime.fromisoformat(str(taken))) if taken else None


def _archive_bytes(instance: DagsterInstance, database: str, day: str | None) -> int | None:
    if day is None:
        return None
    archive, _ = latest_metadata(instance, names.database_key(database, names.ARCHIVE), day)
    size = archive.get("size_bytes")
    return size if isinstance(size, int) else None


def _database_rto(instance: DagsterInstance, database: str, newest: str | None) -> Figure | None:
    """The newest passed restore test, scaled to the newest verified archive (of `newest`)."""
    key = names.database_key(database, names.RESTORE_TEST)
    tested = check_history(instance, key, names.RESTORED_DATA_MATCHES, passed_only=True)
    evaluation = tested[0].evaluation if tested else None
    if evaluation is None or "restore_duration_seconds" not in evaluation.metadata:
        return None
    seconds = float(evaluation.metadata["restore_duration_seconds"].value)
    day = evaluation.partition or "?"
    return database_rto(
        seconds,
        day,
        _archive_bytes(instance, database, evaluation.partition),
        _archive_bytes(instance, database, newest),
    )


def _server_figures(
    instance: DagsterInstance, settings: BackupSettings, server: str, now: dt.datetime
) -> tuple[Figure | None, Figure | None]:
    """The server's RPO (from its archiver now, else its newest observation) and RTO."""
    wal_since_backup = None
    backup, _ = latest_metadata(instance, names.server_key(server, names.BASE_BACKUP))
    try:
        status = archiver_status(settings.server_connection(server))
        lag = status.lag()
        rpo: Figure | None = server_rpo_live(lag.seconds, status.last_archived_time)
        if "start_lsn" in backup:
            position = (
                Segment.parse(status.current_wal, status.wal_segment_size).number
                * status.wal_segment_size
                + status.current_wal_offset
            )
            wal_since_backup = max(position - lsn_number(str(backup["start_lsn"])), 0)
    except (PostgresError, ConfigError):
        observed, at = latest_metadata(instance, names.server_key(server, names.WAL_ARCHIVE))
        recorded = observed.get("archive_lag_seconds")
        rpo = server_rpo_recorded(now, float(recorded), at) if recorded is not None and at else None
    return rpo, _server_rto(instance, server, wal_since_backup)


def _server_rto(
    instance: DagsterInstance, server: str, wal_since_backup: int | None
) -> Figure | None:
    key = names.server_key(server, names.PITR_RESTORE_TEST)
    tested = check_history(instance, key, names.PITR_RESTORE_PROVEN, passed_only=True)
    evaluation = tested[0].evaluation if tested else None
    tested_at = evaluated_at(tested[0]) if tested else None
    if evaluation is None or tested_at is None:
        return None
    figures = {name: value.value for name, value in evaluation.metadata.items()}
    replayed = _number(figures.get("wal_replayed_bytes"))
    replay_seconds = _number(figures.get("replay_and_promotion_seconds"))
    rate = replayed / replay_seconds if replayed and replay_seconds else None
    return server_rto(float(figures["restore_duration_seconds"]), tested_at, rate, wal_since_backup)


def _number(value: object) -> float | None:
    try:
        return float(str(value).replace(",", ""))
    except ValueError:
        return None


def _previous_verdicts(instance: DagsterInstance, check: str) -> dict[str, dict]:
    """Per target, what the newest earlier evaluation of `check` recorded (met, since, ...)."""
    previous = check_history(instance, names.key(names.RECOVERY_OBJECTIVES), check)
    evaluation = previous[0].evaluation if previous else None
    shown = evaluation.metadata.get("targets") if evaluation else None
    return shown.value if shown is not None else {}  # type: ignore[return-value]


def _since(before: dict, met: bool, now: dt.datetime) -> str:
    """Since when a target has met (or missed) an objective: carried from the previous
    evaluation (`before`) while the verdict is the same, else now."""
    if before.get("met") == met and before.get("since"):
        return str(before["since"])
    return now.isoformat(timespec="seconds")


def _objective_result(
    instance: DagsterInstance, standings_: list[Standing], objective: str, now: dt.datetime
) -> AssetCheckResult:
    check = names.OBJECTIVE_CHECKS[objective]
    previous = _previous_verdicts(instance, check)
    label = objective.upper()
    targets = {}
    lines = []
    for standing in standings_:
        figure = standing.figure(objective)
        met = standing.met(objective)
        since = _since(previous.get(standing.target, {}), met, now)
        promised = standing.promised_seconds(objective)
        targets[standing.target] = {
            "met": met,
            "since": since,
            "promised_seconds": promised,
            "achieved_seconds": round(figure.seconds, 1) if figure else None,
            "basis": figure.basis if figure else "nothing proves one yet",
        }
        achieved = duration_text(figure.seconds) if figure else "unproven"
        verdict = "met" if met else "NOT met"
        lines.append(
            f"{standing.target}: {label} {verdict} since {since}: achieved {achieved}, "
            f"promised {duration_text(promised)} ({figure.basis if figure else 'no evidence yet'})"
        )
    missed = [s for s in standings_ if not s.met(objective)]
    error = any(s.promise.error for s in missed)
    return AssetCheckResult(
        asset_key=names.key(names.RECOVERY_OBJECTIVES),
        check_name=check,
        passed=not missed,
        severity=AssetCheckSeverity.ERROR if error else AssetCheckSeverity.WARN,
        description="; ".join(line for line in lines if " NOT met " in line)
        if missed
        else f"every {label} promised is met: " + "; ".join(lines),
        metadata={"targets": MetadataValue.json(targets)},
    )


def _table(standings_: list[Standing]) -> str:
    rows = [
        "| target | RPO promised | RPO achieved | RTO promised | RTO achieved |",
        "|---|---|---|---|---|",
    ]
    for s in standings_:
        cells = [s.target]
        for objective in OBJECTIVES:
            figure = s.figure(objective)
            achieved = duration_text(figure.seconds) if figure else "unproven"
            mark = "" if s.met(objective) else " **NOT met**"
            cells += [duration_text(s.promised_seconds(objective)), f"{achieved}{mark}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def recovery_objectives_asset() -> AssetsDefinition:
    """Evaluated from the records by its schedule and sensor; no upstream in the lineage (an
    edge from every database's and server's steps would crowd each group's graph)."""
    key = names.key(names.RECOVERY_OBJECTIVES)

    @asset(
        key=key,
        group_name=names.RECOVERY_GROUP,
        kinds={"postgres"},
        description="Are we covered? Every database's and server's promised RPO and RTO "
        "(objectives:) against what the newest verified archive, restore test, WAL archive and "
        "PITR test prove now. See the README for the model behind each achieved figure.",
        check_specs=[
            check_spec(
                names.RPO_MET,
                key,
                "Every database's and server's achieved RPO (the age of its newest verified "
                "recovery point) is within its promised rpo_minutes.",
            ),
            check_spec(
                names.RTO_MET,
                key,
                "Every database's and server's achieved RTO (its newest passed restore test, "
                "scaled by growth; for servers plus the WAL replay) is within its rto_minutes.",
            ),
        ],
    )
    def recovery_objectives(
        context: AssetExecutionContext, settings: BackupSettings
    ) -> MaterializeResult:
        now = dt.datetime.now(dt.UTC)
        found = standings(context.instance, settings, now)
        return MaterializeResult(
            metadata={
                "objectives": MetadataValue.md(_table(found)),
                "targets": len(found),
                "rpo_not_met": [s.target for s in found if not s.rpo_met] or "none",
                "rto_not_met": [s.target for s in found if not s.rto_met] or "none",
            },
            check_results=[
                _objective_result(context.instance, found, objective, now)
                for objective in OBJECTIVES
            ],
        )

    return recovery_objectives
