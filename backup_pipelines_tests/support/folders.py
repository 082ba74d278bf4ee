"""Scratch folders the postgres user can enter: the servers and pgBackRest the tests start run
as postgres, and pytest's own temp folders are private to root."""

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def shared_folder(name: str) -> Iterator[Path]:
    """A folder of its own under the system temp folder, deleted afterwards."""
    home = Path(tempfile.mkdtemp(prefix=f"backup-pipelines-{name}-"))
    home.chmod(0o755)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)
