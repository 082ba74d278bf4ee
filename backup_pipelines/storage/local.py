"""A local folder as a store: temp files renamed when complete."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from backup_pipelines.storage.base import (
    ObjectStore,
    ObjectWriter,
    StorageError,
    StoredObject,
    writing,
)
from backup_pipelines.storage.digest import CHUNK_SIZE


class _LocalWriter(ObjectWriter):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self._temp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._temp.open("wb")

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._temp.replace(self._path)

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)

    def fill_from_file(self, source: Path) -> None:
        """Take the whole content from a local file via the kernel's copy (no bytes in Python)."""
        self._file.close()
        shutil.copyfile(source, self._temp)
        self._file = self._temp.open("ab")


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"object key {key!r} escapes the storage folder {self.root}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def download_command(self, key: str, destination: str) -> str:
        return f"cp {shlex.quote(str(self._path(key)))} {shlex.quote(destination)}"

    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter:
        try:
            return _LocalWriter(self._path(key))
        except OSError as error:
            raise StorageError(f"cannot write {self._path(key)}: {error.strerror}") from None

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)} does not exist") from None
        with handle:
            yield from iter(lambda: handle.read(CHUNK_SIZE), b"")

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        if not isinstance(source, LocalStore):
            self.copy_streamed(source, source_key, key)
            return
        if not source.exists(source_key):
            raise StorageError(f"{source.uri(source_key)} does not exist")
        writer = self.open_writer(key)
        assert isinstance(writer, _LocalWriter)
        with writing(writer):
            writer.fill_from_file(source._path(source_key))
            writer.commit()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the day's folder, once it is empty
            path.parent.rmdir()

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root.resolve()
        start = self._path(prefix) if prefix else base
        if start.is_file():
            yield StoredObject(prefix, start.stat().st_size)
            return
        for path in sorted(start.rglob("*")) if start.is_dir() else []:
            if path.is_file() and ".partial-" not in path.name:
                yield StoredObject(path.relative_to(base).as_posix(), path.stat().st_size)
