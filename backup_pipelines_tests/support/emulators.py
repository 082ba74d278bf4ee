"""Azure Blob Storage and Google Cloud Storage on this machine, for the tests and benchmarks:
Azurite (npm `azurite`) and gcp-storage-emulator, in memory, each on a free local port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from backup_pipelines.core.servers.scratch import free_port

# Azurite's well-known account key (public, but treated by the secrets sweep as the secret a
# real account key would be).
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@contextlib.contextmanager
def _running(name: str, argv: list[str], port: int) -> Iterator[None]:
    home = Path(tempfile.mkdtemp(prefix=f"backup-pipelines-{name}-"))
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(argv, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {(home / 'server.log').read_text()}")
            time.sleep(0.2)
        yield
    finally:
        server.kill()  # in memory: nothing to flush, and Azurite ignores SIGTERM for a while
        server.wait(timeout=10)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def running_azurite() -> Iterator[str]:
    """Azurite's blob service; yields its account's connection string."""
    port = free_port()
    argv = [
        "azurite-blob",
        "--inMemoryPersistence",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        # The client library may speak a newer service version than the emulator knows.
        "--skipApiVersionCheck",
    ]
    with _running("azurite", argv, port):
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )


@contextlib.contextmanager
def running_gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator; yields its endpoint (for STORAGE_EMULATOR_HOST)."""
    port = free_port()
    emulator = Path(sys.executable).with_name("gcp-storage-emulator")
    argv = [str(emulator), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    with _running("gcs", argv, port):
        yield f"http://127.0.0.1:{port}"
