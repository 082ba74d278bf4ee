"""TLS certificates made by docker/make-certificates, as compose makes them."""

import os
import subprocess
from pathlib import Path

from backup_pipelines_tests.support.paths import DOCKER


def make_certificates(folder: Path, owner: str | None = None) -> Path:
    """docker/make-certificates as compose's `certificates` service runs it, for 127.0.0.1 as
    both the database host and the S3 terminator; keys owned by `owner` if given."""
    owners = {"DATABASE_HOST_OWNER": owner, "WORKER_OWNER": owner} if owner else {}
    subprocess.run(
        [str(DOCKER / "make-certificates"), str(folder), "127.0.0.1", "127.0.0.1"],
        check=True,
        capture_output=True,
        env={**os.environ, **owners},
    )
    return folder
