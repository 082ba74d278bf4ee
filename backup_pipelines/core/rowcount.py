"""Row counts of a dump, taken from the dump stream itself as it passes to storage: the
manifest then states what the archive holds, and the database is not read a second time.

The counting is `backup-pipelines-rowcount` (tools/rowcount.c), a stage between pg_dump and the
compressor that passes the stream on unchanged. It is compiled code because pg_dump's custom
format frames every COPY row on its own: walking 15 million frames takes Python about 7 s and
the C program a fraction of one. scripts/setup and the image compile it.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

ROW_COUNTER = "backup-pipelines-rowcount"
ROW_COUNTER_STAGE = "row counter"


class RowCounterMissing(RuntimeError):
    """The compiled row counter is not installed."""


def row_counter_command(counts_file: Path) -> list[str]:
    """The pipeline stage that counts rows and writes them to `counts_file` at the end."""
    beside_python = Path(sys.executable).parent / ROW_COUNTER
    program = str(beside_python) if beside_python.exists() else shutil.which(ROW_COUNTER)
    if program is None:
        raise RowCounterMissing(
            f"{ROW_COUNTER} is not installed: scripts/setup compiles tools/rowcount.c into "
            f".venv/bin (cc -O2 -o .venv/bin/{ROW_COUNTER} tools/rowcount.c)"
        )
    return [program, str(counts_file)]


def read_counts(counts_file: Path, encoding: str) -> Mapping[tuple[str, str], int]:
    """(schema, table) -> rows, as the row counter wrote them (names hex-encoded in the dump's
    client encoding)."""
    counts: dict[tuple[str, str], int] = {}
    for line in counts_file.read_text().splitlines():
        rows, schema, table = line.split("\t")
        name = (bytes.fromhex(schema).decode(encoding), bytes.fromhex(table).decode(encoding))
        counts[name] = int(rows)
    return counts
