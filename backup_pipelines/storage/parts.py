"""Streaming an object as numbered parts, the way every remote store takes large writes
(S3 multipart uploads, Azure staged blocks, GCS resumable chunks): a bounded number of parts in
flight, so memory is bounded whatever the size, and nothing visible before the store's commit."""

from __future__ import annotations

import math
import threading
from abc import abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backup_pipelines.storage.base import ObjectWriter, StorageError

MIB = 1 << 20
MIN_PART_SIZE = 8 * MIB
MAX_PART_SIZE = 512 * MIB
# Above this, S3 refuses a single CopyObject; a multipart copy is used instead.
SINGLE_COPY_LIMIT = 5 * 1024 * MIB


def part_size_for(expected_size: int, max_parts: int, minimum: int = MIN_PART_SIZE) -> int:
    """A part size that fits `expected_size` (with room to grow 4x) into `max_parts` parts."""
    needed = math.ceil(4 * max(expected_size, 1) / max_parts)
    return min(MAX_PART_SIZE, max(minimum, math.ceil(needed / MIB) * MIB))


class PartedWriter(ObjectWriter):
    """Cuts the stream into parts of `part_size` and uploads up to `in_flight` at once, in
    order of submission. An object that fits one part is put whole; otherwise the last part
    (never empty) carries the total size, and `_complete` makes the parts one object."""

    def __init__(
        self,
        where: str,
        expected_size: int,
        *,
        max_parts: int,
        in_flight: int = 2,
        min_part_size: int = MIN_PART_SIZE,
    ) -> None:
        super().__init__()
        self._where = where
        self._max_parts = max_parts
        self._part_size = part_size_for(expected_size, max_parts, min_part_size)
        self._buffer = bytearray()
        self._parts: list[Future[Any]] = []
        self._slots = threading.BoundedSemaphore(in_flight)
        self._pool = ThreadPoolExecutor(in_flight, thread_name_prefix="upload-part")
        self._begun = False

    @abstractmethod
    def _begin(self) -> None:
        """Start the upload (before the first part)."""

    @abstractmethod
    def _upload_part(self, number: int, body: bytes, total: int | None) -> Any:
        """Upload part `number` (from 1); `total` is the object's size on the last part."""

    @abstractmethod
    def _complete(self, parts: list[Any]) -> None:
        """Make the uploaded parts (their `_upload_part` results, in order) one object."""

    @abstractmethod
    def _put_whole(self, body: bytes) -> None: ...

    @abstractmethod
    def _abort_upload(self) -> None:
        """Discard the parts uploaded so far (best effort: nothing is visible anyway)."""

    def _write(self, chunk: bytes) -> None:
        self._buffer += chunk
        # Strictly more than a part: the last part is never empty.
        while len(self._buffer) > self._part_size:
            with memoryview(self._buffer) as view:  # one copy, not two
                part = bytes(view[: self._part_size])
            del self._buffer[: self._part_size]
            self._send_part(part, total=None)

    def _send_part(self, body: bytes, total: int | None) -> None:
        if not self._begun:
            self._begin()
            self._begun = True
        number = len(self._parts) + 1
        if number > self._max_parts:
            raise StorageError(
                f"{self._where} needs more than {self._max_parts} parts; "
                "the database grew far beyond its estimate"
            )
        self._slots.acquire()
        future = self._pool.submit(self._upload_part, number, body, total)
        future.add_done_callback(lambda _: self._slots.release())
        self._parts.append(future)

    def _commit(self) -> None:
        if not self._begun:
            self._put_whole(bytes(self._buffer))
            self._buffer.clear()
            self._pool.shutdown()
            return
        self._send_part(bytes(self._buffer), total=self._counter.size)
        self._buffer.clear()
        try:
            self._complete([future.result() for future in self._parts])
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown()

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffer.clear()
        if self._begun:
            self._begun = False
            self._abort_upload()
