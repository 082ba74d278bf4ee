"""Dagster server processes the tests start and stop, the production instance's environment,
and a watch on every process's argv."""

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

from backup_pipelines_demo.cluster import LocalCluster


def serve_definitions(program: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    """A Dagster server process (webserver, gRPC code server) for this project's definitions
    on 127.0.0.1:`port`, output discarded."""
    return subprocess.Popen(
        [*program, "-m", "backup_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen, grace: float = 30.0, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds (a loaded machine can
    slow a graceful shutdown); with `group`, its whole process group."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig) if group else process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def production_instance_env(
    cluster: LocalCluster, dagster_database: str, s3_endpoint: str, logs_bucket: str
) -> dict[str, str]:
    """What the production dagster.yaml reads from the environment: Dagster's PostgreSQL (a
    database on the session's server) and the compute-log bucket (on the moto endpoint)."""
    return {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(cluster.port),
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": cluster.superuser_password,
        "DAGSTER_PG_DB": dagster_database,
        "DAGSTER_COMPUTE_LOGS_BUCKET": logs_bucket,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
    }


class CommandLineWatch:
    """Reads every process's argv from /proc every few milliseconds while it runs."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = secrets
        self.programs_seen: set[str] = set()
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes().split(b"\0")
                except OSError:
                    continue
                program = Path(argv[0].decode(errors="replace")).name
                self.programs_seen.add(program)
                text = b" ".join(argv).decode(errors="replace")
                if any(secret in text for secret in self.secrets):
                    self.leaks.append(text)

    def __enter__(self) -> "CommandLineWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
