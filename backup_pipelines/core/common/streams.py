"""Byte streams through child processes: pg_dump into a compressor, an archive into pg_restore.

Data moves in fixed-size chunks through OS pipes, so memory stays bounded whatever the size.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Literal

from backup_pipelines.storage.digest import CHUNK_SIZE

_STDERR_KEEP = 64 * 1024
_F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe buffer means far fewer wake-ups per gigabyte

Compression = Literal["zstd", "gzip", "none"]

_COMPRESSORS: dict[str, tuple[list[str], list[str], str, int]] = {
    # name: (compress argv, decompress argv, file suffix, default level)
    "zstd": (["zstd", "-q", "-c"], ["zstd", "-q", "-d", "-c"], ".zst", 1),
    "gzip": (["gzip", "-c"], ["gzip", "-d", "-c"], ".gz", 6),
}


def compress_command(compression: Compression, level: int | None) -> list[str] | None:
    if compression == "none":
        return None
    argv, _, _, default_level = _COMPRESSORS[compression]
    return [*argv, f"-{level or default_level}"]


def decompress_command(compression: Compression) -> list[str] | None:
    return None if compression == "none" else list(_COMPRESSORS[compression][1])


def file_suffix(compression: Compression) -> str:
    return "" if compression == "none" else _COMPRESSORS[compression][2]


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, CHUNK_SIZE)


class StderrTail:
    """Collects the last bytes a child writes to stderr, in a thread, so it never blocks."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe: IO[bytes]) -> None:
        for chunk in iter(lambda: pipe.read1(8192), b""):
            self._chunks.append(chunk)
            self._size += len(chunk)
            while self._size > _STDERR_KEEP and len(self._chunks) > 1:
                self._size -= len(self._chunks.popleft())
        pipe.close()

    def text(self) -> str:
        self._thread.join(timeout=10)
        return b"".join(self._chunks).decode(errors="replace").strip()


@dataclass
class Stage:
    name: str
    process: subprocess.Popen[bytes]
    stderr: StderrTail = field(init=False)

    def __post_init__(self) -> None:
        assert self.process.stderr is not None
        self.stderr = StderrTail(self.process.stderr)


class Pipeline:
    """Child processes chained stdout→stdin; the caller feeds the first and/or reads the last."""

    def __init__(
        self,
        commands: Sequence[tuple[str, list[str]]],
        *,
        env: dict[str, str] | None = None,
        feed: bool = False,
        source: IO[bytes] | None = None,
        output: IO[bytes] | int = subprocess.PIPE,
        pass_fds: Sequence[int] = (),
    ) -> None:
        """The first stage reads what the caller writes to `stdin` (`feed`), a file (`source`)
        or nothing. `output` is where the last stage writes: a pipe to read (default), a file,
        DEVNULL.

        `pass_fds` are inherited by the stages (e.g. a pipe carrying a key).
        """
        self.stages: list[Stage] = []
        self.stdin: IO[bytes] | None = None
        upstream: IO[bytes] | int | None = (
            source if source is not None else subprocess.PIPE if feed else subprocess.DEVNULL
        )
        try:
            for number, (name, argv) in enumerate(commands, start=1):
                process = subprocess.Popen(
                    argv,
                    stdin=upstream,
                    stdout=output if number == len(commands) else subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    pass_fds=pass_fds,
                )
                if self.stages and self.stages[-1].process.stdout is not None:
                    # The child now holds the read end; ours would keep the pipe alive.
                    self.stages[-1].process.stdout.close()
                _widen_pipe(process.stdout)
                self.stages.append(Stage(name, process))
                upstream = process.stdout
        except BaseException:
            self.kill()
            raise
        self.stdin = self.stages[0].process.stdin
        _widen_pipe(self.stdin)
        self.stdout = self.stages[-1].process.stdout

    def read_chunks(self) -> Iterator[bytes]:
        assert self.stdout is not None
        yield from iter(lambda: self.stdout.read(CHUNK_SIZE), b"")

    def drain_into(self, sink: Callable[[bytes], None]) -> tuple[str, int, str] | None:
        """Pass the last stage's output to `sink` chunk by chunk (every stage is killed if
        that raises); the failed stage that caused the others' failure (name, exit code,
        stderr), or None when every stage succeeded."""
        try:
            for chunk in self.read_chunks():
                sink(chunk)
        except BaseException:
            self.kill()
            raise
        failures = [result for result in self.wait() if result[1] != 0]
        return first_cause(failures) if failures else None

    def wait(self) -> list[tuple[str, int, str]]:
        """(name, exit code, stderr) of every stage, in order."""
        if self.stdout is not None:
            self.stdout.close()
        return [(s.name, s.process.wait(), s.stderr.text()) for s in self.stages]

    def kill(self) -> None:
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()
        for stage in self.stages:
            if stage.process.poll() is None:
                stage.process.kill()
        for stage in self.stages:
            stage.process.wait()


SIGPIPE_EXIT = -signal.SIGPIPE  # the exit code of a stage whose reader stopped


def first_cause(failures: list[tuple[str, int, str]]) -> tuple[str, int, str]:
    """Of a pipeline's failed stages (name, exit code, stderr), the one that caused the rest:
    a stage whose reader stopped dies of a broken pipe, which is not the cause."""
    for failure in failures:
        _, code, err = failure
        if code != SIGPIPE_EXIT and "Broken pipe" not in err:
            return failure
    return failures[0]
