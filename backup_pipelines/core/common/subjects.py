"""What a backup is of: a database (logical dumps), its copies in the replica store, an S3
bucket (snapshots) or a configuration source (configuration snapshots). A plan or a deletion
names its subject by type, never by an encoded string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class _Subject:
    name: str
    kind: ClassVar[str]

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass(frozen=True)
class Database(_Subject):
    kind: ClassVar[str] = "database"


@dataclass(frozen=True)
class Replica(_Subject):
    """A database's copies in the replica store, kept by their own rules."""

    kind: ClassVar[str] = "replica"


@dataclass(frozen=True)
class Bucket(_Subject):
    kind: ClassVar[str] = "bucket"


@dataclass(frozen=True)
class ConfigSource(_Subject):
    """A configuration source's daily snapshots (configs:, and each server's own files)."""

    kind: ClassVar[str] = "config"


Subject = Database | Replica | Bucket | ConfigSource
SUBJECT_KINDS: dict[str, type[Database] | type[Replica] | type[Bucket] | type[ConfigSource]] = {
    Database.kind: Database,
    Replica.kind: Replica,
    Bucket.kind: Bucket,
    ConfigSource.kind: ConfigSource,
}
