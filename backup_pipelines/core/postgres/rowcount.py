"""Row counts of a dump, taken from the dump stream itself as it passes to storage: the
manifest then states what the archive holds, and the database is not read a second time.

The counting is a stage between pg_dump and the compressor that passes the stream on
unchanged: this module run as a program (`python -m backup_pipelines.core.postgres.rowcount COUNTS
[OFFSETS]`), its loop in C (core/postgres/_rowcount.c). It is compiled code because pg_dump's custom
format frames every COPY row on its own: walking 15 million frames takes Python about 7 s and
the C loop a fraction of one. The package's own build compiles it (setup.py); importing this
module fails at once where it is missing, so a broken install never reaches a backup.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from backup_pipelines.core.postgres import _rowcount

ROW_COUNTER_STAGE = "row counter"
_OFF_SIZE_AT = 9  # the header's byte giving the size of an offset: after "PGDMP", 3, int size
_OFFSET_SET = 2  # pg_dump's K_OFFSET_POS_SET, the flag before an offset that is known


def row_counter_command(counts_file: Path, offsets_file: Path | None = None) -> list[str]:
    """The pipeline stage that counts rows and writes them to `counts_file` at the end (and,
    given `offsets_file`, where each entry's offset field and data are)."""
    return [
        sys.executable,
        "-m",
        __name__,
        str(counts_file),
        *([str(offsets_file)] if offsets_file else []),
    ]


def read_counts(counts_file: Path, encoding: str) -> Mapping[tuple[str, str], int]:
    """(schema, table) -> rows, as the row counter wrote them (names hex-encoded in the dump's
    client encoding)."""
    counts: dict[tuple[str, str], int] = {}
    for line in counts_file.read_text().splitlines():
        rows, schema, table = line.split("\t")
        name = (bytes.fromhex(schema).decode(encoding), bytes.fromhex(table).decode(encoding))
        counts[name] = int(rows)
    return counts


def set_data_offsets(dump: Path, workdir: Path) -> None:
    """Write each entry's data position into the table of contents of `dump` (a custom-format
    file written through a pipe, which has none), as pg_dump does when it writes to a file:
    pg_restore -j then seeks to each table's data instead of scanning for it. A file the row
    counter cannot read is left as it was; pg_restore still reads it, scanning."""
    counts, offsets = workdir / "rowcount.counts", workdir / "rowcount.offsets"
    with dump.open("rb") as stream:
        done = subprocess.run(
            row_counter_command(counts, offsets), stdin=stream, stdout=subprocess.DEVNULL
        )
    if done.returncode != 0:
        return
    with dump.open("r+b") as file:
        file.seek(_OFF_SIZE_AT)
        off_size = file.read(1)[0]
        for line in offsets.read_text().splitlines():
            field, data = (int(value) for value in line.split("\t"))
            file.seek(field)
            file.write(bytes([_OFFSET_SET]) + data.to_bytes(off_size, "little"))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: python -m {__spec__.name} COUNTS_FILE [OFFSETS_FILE] < dump > dump")
    _rowcount.count(*sys.argv[1:])
