"""The create_restore_point job: a named restore point made on a server, archived before the run
ends, and recorded as an event on pg_server/<server>/wal_archive (name, LSN, time, who asked,
note). The names recorded since the oldest kept base backup started are the window's names, and
a name is made once there. Logic: core/servers/restore_points.py."""

import datetime as dt
from collections.abc import Iterator

from dagster import (
    AssetObservation,
    AssetRecordsFilter,
    Config,
    DagsterInstance,
    Failure,
    MetadataValue,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import PgBackRestError
from backup_pipelines.core.servers.restore_points import RestorePoint, create_restore_point
from backup_pipelines.core.servers.wal import utc_text
from backup_pipelines.core.servers.window import Span
from backup_pipelines.defs.postgres.jobs import triggered_by
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import require_configured

_HISTORY_LIMIT = 10_000


class RestorePointRequest(Config):
    server: str = Field(description="The configured server to mark.")
    name: str = Field(
        description="The restore point's name (at most 63 bytes, unique in the recovery window), "
        "e.g. before-migration-42."
    )
    note: str = Field(default="", description="Why the point was made (shown in the audit).")


def recorded_restore_points(instance: DagsterInstance, server: str) -> list[RestorePoint]:
    """Every restore point create_restore_point recorded for `server`, oldest first."""
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=names.server_key(server, names.WAL_ARCHIVE)),
        limit=_HISTORY_LIMIT,
    ).records
    points = []
    for record in records:
        observation = record.asset_observation
        if observation is None:
            continue
        metadata = {key: str(value.value) for key, value in observation.metadata.items()}
        if metadata.get("event") == names.RESTORE_POINT_EVENT:
            points.append(
                RestorePoint(
                    server,
                    metadata["name"],
                    metadata["lsn"],
                    dt.datetime.fromisoformat(metadata["created_at"]),
                    metadata["wal_segment"],
                    metadata["requested_by"],
                    metadata["note"],
                )
            )
    return sorted(points, key=lambda point: point.created_at)


def restore_points_table(points: list[RestorePoint]) -> MetadataValue:
    """The restore points a restore can reach, as a table in the asset's metadata."""
    if not points:
        return MetadataValue.md("no named restore point in the recovery window")
    rows = [
        f"| {p.name} | {utc_text(p.created_at)} | {p.lsn} | {p.requested_by} | {p.note} |"
        for p in points
    ]
    header = "| name | made at | LSN | requested by | note |\n|---|---|---|---|---|"
    return MetadataValue.md("\n".join([header, *rows]))


def recovery_spans_table(spans: list[Span]) -> MetadataValue:
    """The window as a table: each stretch of time, and the backup a restore to a moment in it
    starts from, or why it cannot be reached."""
    if not spans:
        return MetadataValue.md("no moment can be reached yet: no base backup")
    rows = [
        f"| {utc_text(span.start)} | {utc_text(span.end)} | "
        + (
            f"yes, from {span.backup.kind} backup {span.backup.label} |"
            if span.backup
            else f"no: {span.reason} |"
        )
        for span in spans
    ]
    header = "| from | to | restorable |\n|---|---|---|"
    return MetadataValue.md("\n".join([header, *rows]))


def restore_point_event(point: RestorePoint) -> AssetObservation:
    return AssetObservation(
        asset_key=names.server_key(point.server, names.WAL_ARCHIVE),
        description=f"restore point {point.name!r} made by {point.requested_by}"
        + (f": {point.note}" if point.note else ""),
        metadata={
            "event": names.RESTORE_POINT_EVENT,
            "name": point.name,
            "lsn": point.lsn,
            "created_at": point.created_at.isoformat(),
            "wal_segment": point.wal_segment,
            "requested_by": point.requested_by,
            "note": point.note,
        },
    )


@op(
    name=names.RESTORE_POINT_OP,
    out={},
    description="Make a named restore point, wait until it is archived, record it.",
)
def make_restore_point(
    context: OpExecutionContext, config: RestorePointRequest, settings: BackupSettings
) -> Iterator[AssetObservation]:
    require_configured(
        names.CREATE_RESTORE_POINT_JOB, "server", config.server, settings.config().servers
    )
    try:
        backups = settings.server_engine(config.server).info().backups
        # Recovery by name from the oldest backup stops at the first point of that name it
        # replays: a name is unique from that backup's start on.
        since = backups[0].started if backups else None
        taken = {
            point.name
            for point in recorded_restore_points(context.instance, config.server)
            if since is None or point.created_at >= since
        }
        point = create_restore_point(
            config.server,
            settings.server_connection(config.server),
            config.name,
            requested_by=triggered_by(context.run.tags),
            note=config.note,
            taken=taken,
        )
    except (PgBackRestError, PostgresError, PitrError) as error:
        raise Failure(str(error)) from None
    context.log.info(f"restore point {point.name!r} at {point.lsn} is archived")
    yield restore_point_event(point)


@job(
    name=names.CREATE_RESTORE_POINT_JOB,
    description="Mark a moment on a server by name (before a migration, a release): "
    "pg_create_restore_point, then the WAL switched and archived, so restore_server can reach it "
    "by name when the run succeeds. Recorded on pg_server/<server>/wal_archive.",
)
def create_restore_point_job() -> None:
    make_restore_point()
