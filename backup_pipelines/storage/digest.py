"""What storage and the commands both need, kept at the bottom so storage imports nothing from
core/: the chunk size streams move in, and a running SHA-256 and size of what passed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class StreamDigest:
    sha256: str
    size: int


class HashingCounter:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> StreamDigest:
        return StreamDigest(self._hash.hexdigest(), self.size)


def digest_chunks(chunks: Iterable[bytes]) -> StreamDigest:
    counter = HashingCounter()
    for chunk in chunks:
        counter.update(chunk)
    return counter.digest()
