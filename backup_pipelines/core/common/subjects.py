"""What a backup is of: a database (logical dumps), its copies in the replica store, or an S3
bucket (snapshots). A plan or a deletion names its subject by type, never by an encoded
string."""

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


Subject = Database | Replica | Bucket
SUBJECT_KINDS: dict[str, type[Database] | type[Replica] | type[Bucket]] = {
    Database.kind: Database,
    Replica.kind: Replica,
    Bucket.kind: Bucket,
}
