"""What a backup is: its manifest (the commit marker, written last: no manifest, no backup) and
the reference that passes between the steps. Where they live: core/common/layout.py."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from backup_pipelines import names
from backup_pipelines.core.common.layout import (
    database_prefix,
    day_of_backup_key,
    day_prefix,
    is_day_manifest,
    manifest_key,
    ref_key,
)
from backup_pipelines.core.common.streams import Compression
from backup_pipelines.core.postgres.catalog import RelationCount, TableConstraint
from backup_pipelines.storage import ObjectStore, StorageError

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    database: str
    partition: str
    object_key: str
    snapshot_taken_at: str
    server_version: str
    pg_dump_version: int
    compression: Compression
    compression_level: int | None
    size_bytes: int
    sha256: str
    relations: list[dict[str, Any]]
    sequences: dict[str, int | None]
    dump_seconds: float
    # Foreign keys and check constraints of the snapshot, which a restore must reproduce.
    constraints: list[dict[str, Any]] = field(default_factory=list)
    archive_format: str = "pg_dump custom format (-Fc -Z0), compressed as a whole"
    archived_at: str | None = None
    # "age" when the object is encrypted (to `encryption_recipient`); size and SHA-256 are
    # those of the stored, encrypted bytes.
    encryption: str | None = None
    encryption_recipient: str | None = None
    format_version: int = MANIFEST_FORMAT
    # The name of the database pg_dump read (its archive header says the same); None in
    # manifests written before it was recorded.
    source_database: str | None = None
    # When the run asking for this day was submitted, and how long after that the snapshot was
    # taken (a run queued before midnight may take its day's snapshot after it).
    submitted_at: str | None = None
    start_delay_seconds: float | None = None
    # Set in the replica store's copy of the manifest: when the copy there was proved.
    replicated_at: str | None = None

    @property
    def relation_counts(self) -> list[RelationCount]:
        return [RelationCount(**relation) for relation in self.relations]

    @property
    def table_constraints(self) -> list[TableConstraint]:
        return [TableConstraint(**constraint) for constraint in self.constraints]

    @property
    def total_rows(self) -> int:
        return sum(relation["rows"] for relation in self.relations)

    @property
    def subject(self) -> str:
        return f"database {self.database!r}"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls(**json.loads(data))

    def identity_problem(
        self, database: str, dumped_database: str | None, configured_name: str | None
    ) -> str | None:
        """Why this manifest, with an archive whose header names `dumped_database`, is not a
        backup of configured database `database` (a look-alike), or None. `configured_name` is
        the database its URL names (None when the URL leaves it to libpq's default)."""
        if self.database != database:
            return f"the manifest filed under {database!r} describes database {self.database!r}"
        if self.source_database is not None and dumped_database != self.source_database:
            return (
                f"the archive was dumped from database {dumped_database!r}, but its manifest "
                f"records {self.source_database!r}"
            )
        if configured_name is not None and dumped_database != configured_name:
            return (
                f"the archive was dumped from database {dumped_database!r}, but "
                f"databases.{database}.url names {configured_name!r}: it is not this "
                "database's backup"
            )
        return None

    def archived(self, at: dt.datetime) -> Manifest:
        return replace(self, archived_at=at.isoformat())

    def replicated(self, at: dt.datetime) -> Manifest:
        return replace(self, replicated_at=at.isoformat())


def read_manifest(store: ObjectStore, database: str, day: str) -> Manifest | None:
    key = manifest_key(database, day)
    if not store.exists(key):
        return None
    try:
        return Manifest.from_json(store.read_bytes(key))
    except (ValueError, TypeError) as error:
        raise StorageError(f"{store.uri(key)} is not a valid backup manifest: {error}") from None


def list_backup_days(store: ObjectStore, database: str) -> list[str]:
    """Days that have a committed backup (a manifest), oldest first."""
    return sorted(
        day_of_backup_key(key)
        for key in store.list_keys(database_prefix(database))
        if is_day_manifest(key)
    )


def remove_superseded(store: ObjectStore, database: str, day: str, keep: str) -> None:
    """Delete a day's earlier backup objects once its manifest names the new one."""
    current = {keep, manifest_key(database, day)}
    for key in list(store.list_keys(day_prefix(database, day))):
        if key not in current:
            store.delete(key)


@dataclass(frozen=True)
class BackupRef:
    """The small reference that passes between assets instead of a dump's bytes."""

    database: str
    partition: str
    uri: str
    object_key: str
    manifest_key: str
    sha256: str
    size_bytes: int

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackupRef:
        return cls(**json.loads(data))


def save_ref(refs: ObjectStore, step: str, ref: BackupRef) -> None:
    refs.write_bytes(ref_key(ref.database, step, ref.partition), ref.to_json())


def load_ref(refs: ObjectStore, database: str, step: str, day: str) -> BackupRef:
    """The reference `step` stored for `day`; a clear error when that step never ran."""
    key = ref_key(database, step, day)
    if not refs.exists(key):
        asset = f"{names.DATABASE_PREFIX}/{database}/{step}"
        how = (
            "Dumps can only be taken on their own day, so this day cannot be archived."
            if step == names.DUMP
            else f"Materialize {asset} for that day first."
        )
        raise StorageError(
            f"there is no {step} of database {database!r} for {day}: {asset} was never "
            f"materialized for that day (or its backup was pruned). {how}"
        )
    return BackupRef.from_json(refs.read_bytes(key))
