"""Upload throughput and memory of the Azure and GCS stores against each official client's own
upload call, on Azurite and gcp-storage-emulator, in one run.

    python -m benchmarks.cloud_upload [--sizes 128 512] [--repeat 3]

Each upload runs in its own process (its peak RSS is that process's own; the time is that of
the upload call alone), alternating ours and the client's; the figure is the median. Ours
streams the file in 1 MiB chunks through `ObjectStore.write_chunks`, as a dump does; the
client's call is given the whole file (`ContainerClient.upload_blob(max_concurrency=2)`,
`Blob.upload_from_filename`: its default 100 MiB chunks, and again with our 16 MiB chunks, since
gcp-storage-emulator copies the whole upload so far on every chunk it receives).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
CONTAINER = "bench"


def upload(kind: str, mode: str, path: Path) -> None:
    """The measured work, in a child process: prints the seconds of the upload call alone
    (imports and interpreter start-up excluded on both sides)."""
    started = 0.0
    key = f"{mode}-{time.monotonic_ns()}.bin"
    if kind == "azure":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(os.environ["BENCH_AZURE"])
        from backup_pipelines.storage.azure import AzureStore

        store = AzureStore(service, CONTAINER)
        if mode == "client":
            started = time.perf_counter()
            with path.open("rb") as source:
                service.get_container_client(CONTAINER).upload_blob(
                    key, source, length=path.stat().st_size, max_concurrency=2
                )
    else:
        from google.cloud import storage

        from backup_pipelines.storage.gcs import CHUNK_SIZE, GcsStore

        client = storage.Client(project="bench")
        store = GcsStore(client, CONTAINER)
        if mode.startswith("client"):
            blob = client.bucket(CONTAINER).blob(key)
            if mode == "client-same-chunks":
                blob.chunk_size = CHUNK_SIZE
            started = time.perf_counter()
            blob.upload_from_filename(str(path))
    if mode == "ours":
        started = time.perf_counter()
        with path.open("rb") as source:
            store.write_chunks(key, iter(lambda: source.read(MIB), b""), expected_size=0)
    print(time.perf_counter() - started)


def measure(kind: str, mode: str, path: Path, env: dict[str, str]) -> tuple[float, int]:
    """Seconds and peak RSS (MiB) of one upload in its own process."""
    argv = [sys.executable, __file__, "--child", kind, mode, str(path)]
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    seconds = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{kind} {mode} upload failed ({status})")
    return float(seconds), usage.ru_maxrss // 1024


def make_file(folder: Path, size_mib: int) -> Path:
    path = folder / f"upload-{size_mib}.bin"
    with path.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(MIB))
    return path


def run(kind: str, env: dict[str, str], files: list[Path], repeat: int) -> None:
    """One line per size: ours, then each client variant as a ratio to ours."""
    modes = ["ours", "client"] + (["client-same-chunks"] if kind == "gcs" else [])
    for path in files:
        size = path.stat().st_size // MIB
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        rss = dict.fromkeys(modes, 0)
        for _ in range(repeat):
            for mode in modes:
                seconds, peak = measure(kind, mode, path, env)
                times[mode].append(seconds)
                rss[mode] = max(rss[mode], peak)
        median = {mode: statistics.median(times[mode]) for mode in modes}
        line = (
            f"{kind:5} {size:5} MiB  ours {median['ours']:6.2f} s "
            f"({size / median['ours']:6.1f} MiB/s, peak RSS {rss['ours']} MiB)"
        )
        for mode in modes[1:]:
            line += (
                f" | {mode} {median[mode]:6.2f} s (peak RSS {rss[mode]} MiB)"
                f" ratio {median['ours'] / median[mode]:.2f}x"
            )
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from azure.storage.blob import BlobServiceClient
    from google.cloud import storage

    from backup_pipelines_tests.support.emulators import running_azurite, running_gcs_emulator

    with tempfile.TemporaryDirectory(prefix="backup-pipelines-bench-upload-") as work:
        files = [make_file(Path(work), size) for size in args.sizes]
        with running_azurite() as connection_string:
            BlobServiceClient.from_connection_string(connection_string).create_container(CONTAINER)
            run("azure", {**os.environ, "BENCH_AZURE": connection_string}, files, args.repeat)
        with running_gcs_emulator() as endpoint:
            env = {**os.environ, "STORAGE_EMULATOR_HOST": endpoint}
            os.environ["STORAGE_EMULATOR_HOST"] = endpoint
            storage.Client(project="bench").create_bucket(CONTAINER)
            run("gcs", env, files, args.repeat)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        upload(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    else:
        main()
