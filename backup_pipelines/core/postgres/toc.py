"""A pg_dump archive's table of contents as `pg_restore --list` prints it: which relations
have a data entry."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backup_pipelines.core.postgres.catalog import RelationCount

_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.+)$")
_TOC_DBNAME = re.compile(r"^;\s+dbname: (.*)$")
_DATA_ENTRY_KINDS = ("TABLE DATA ", "MATERIALIZED VIEW DATA ")


@dataclass(frozen=True)
class TableOfContents:
    entries: int
    data_oids: frozenset[int]  # source OIDs of relations whose data the archive holds
    dumped_database: str | None = None  # the header's "dbname": the database pg_dump read


def parse_toc(listing: str) -> TableOfContents:
    entries = 0
    data_oids: set[int] = set()
    dumped_database = None
    for line in listing.splitlines():
        header = _TOC_DBNAME.match(line)
        if header and dumped_database is None:
            dumped_database = header.group(1)
        match = _TOC_LINE.match(line)
        if not match:
            continue
        entries += 1
        if match.group(4).startswith(_DATA_ENTRY_KINDS):
            data_oids.add(int(match.group(3)))
    return TableOfContents(entries, frozenset(data_oids), dumped_database)


def relations_missing_data(
    toc: TableOfContents, relations: list[RelationCount]
) -> list[RelationCount]:
    """Relations that held rows in the snapshot but have no data entry in the archive."""
    return [r for r in relations if r.rows > 0 and r.oid not in toc.data_oids]
