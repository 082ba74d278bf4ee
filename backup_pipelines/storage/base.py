"""The one interface every store implements, and what writing through it guarantees.

Writes are atomic: a streamed object becomes visible only when complete (a renamed temp file,
or a completed multipart upload); a failed write leaves nothing that could pass for a backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from backup_pipelines.storage.digest import HashingCounter, StreamDigest


class StorageError(RuntimeError):
    """Storage refused or failed an operation; the message names the location and the fix."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str | None = None  # S3 only: the object's ETag, without quotes


class ObjectWriter(ABC):
    """Streams one object; `commit` makes it visible, leaving the block any other way aborts."""

    def __init__(self) -> None:
        self._counter = HashingCounter()

    def write(self, chunk: bytes) -> None:
        self._counter.update(chunk)
        self._write(chunk)

    def commit(self) -> StreamDigest:
        self._commit()
        return self._counter.digest()

    @abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class ObjectStore(ABC):
    """One place to keep objects: a folder, or a bucket and prefix."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter: ...

    @abstractmethod
    def read_chunks(self, key: str) -> Iterator[bytes]: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The stored size in bytes, or None when there is no such object."""

    def storage_class(self, key: str) -> str | None:
        """The storage class or access tier `key` is kept in, where the store has them."""
        return None

    @abstractmethod
    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        """Copy an object of `source` here, server-side where the store allows."""

    def copy_streamed(self, source: ObjectStore, source_key: str, key: str) -> None:
        """Copy through this process, between stores that cannot copy server-side."""
        size = source.size(source_key) or 0
        self.write_chunks(key, source.read_chunks(source_key), expected_size=size)

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under `prefix` with its size, page by page (never all in memory)."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        return (stored.key for stored in self.list_objects(prefix))

    def locked_until(self, key: str) -> dt.datetime | None:
        """Until when an object lock forbids deleting `key` (None: it may be deleted)."""
        return None

    def require_object_lock(self) -> None:
        """Raise unless `retain` can lock objects here."""
        raise StorageError(f"{self.uri('')}: object lock needs S3 storage with Object Lock")

    def retain(self, key: str, until: dt.datetime) -> None:
        """Forbid deleting `key` before `until` (S3 Object Lock)."""
        self.require_object_lock()

    @abstractmethod
    def download_command(self, key: str, destination: str) -> str:
        """The shell command that fetches an object without this service (for the runbook)."""

    def write_chunks(
        self, key: str, chunks: Iterable[bytes], *, expected_size: int = 0
    ) -> StreamDigest:
        """Stream `chunks` into one object, atomically; nothing is left if this fails."""
        writer = self.open_writer(key, expected_size=expected_size)
        with writing(writer):
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def write_bytes(self, key: str, data: bytes) -> StreamDigest:
        return self.write_chunks(key, [data], expected_size=len(data))

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read_chunks(key))

    def exists(self, key: str) -> bool:
        return self.size(key) is not None


@contextlib.contextmanager
def writing(writer: ObjectWriter) -> Iterator[ObjectWriter]:
    """Abort the writer if the block raises (or is cancelled)."""
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
