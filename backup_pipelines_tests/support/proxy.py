"""A TCP proxy that damages data on the way: the network between this machine and a store,
flipping one byte of the first upload's body (a copy damaged in transit)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

_HEADERS_END = b"\r\n\r\n"


class _Flipper:
    """Client-to-server bytes of every connection pass through `feed`; the byte `offset`
    bytes into the body of the first PUT seen is flipped, once."""

    def __init__(self, offset: int) -> None:
        self.offset, self.flipped = offset, False
        self._lock = threading.Lock()

    def feed(self, state: dict, data: bytes) -> bytes:
        with self._lock:
            if self.flipped:
                return data
            if "body_at" not in state:
                state["seen"] = state.get("seen", b"") + data
                seen = state["seen"]
                end = seen.find(_HEADERS_END)
                if not seen.startswith(b"PUT ") or end < 0:
                    if not seen.startswith(b"PUT ") and end >= 0:
                        state["seen"] = b""  # another request; look at the next one
                    return data
                # Body bytes already in `seen` before this chunk's end.
                state["body_at"] = len(seen) - (end + len(_HEADERS_END))
                position = self.offset - (state["body_at"] - len(data))
            else:
                position = self.offset - state["body_at"]
                state["body_at"] += len(data)
            if 0 <= position < len(data):
                damaged = bytearray(data)
                damaged[position] ^= 0x01
                self.flipped = True
                return bytes(damaged)
            return data


@contextlib.contextmanager
def damaging_proxy(target: str, offset: int = 4096) -> Iterator[tuple[str, _Flipper]]:
    """`http://127.0.0.1:<port>` forwarding to `target` (http://host:port)."""
    host, port = target.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    flipper, stop = _Flipper(offset), threading.Event()

    def pump(source: socket.socket, sink: socket.socket, damage: bool) -> None:
        state: dict = {}
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(flipper.feed(state, data) if damage else data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                client, _ = listener.accept()
                upstream = socket.create_connection((host, int(port)))
                for args in ((client, upstream, True), (upstream, client, False)):
                    threading.Thread(target=pump, args=args, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", flipper
    finally:
        stop.set()
        listener.close()
