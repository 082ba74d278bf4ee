"""Years of small synthetic backups written straight into the stores, for retention tests and
the planning benchmark: the same layout as real backups (archive + manifest, dump + manifest,
references), with a few bytes of content instead of a dump."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from backup_pipelines.core.common.layout import dump_object_key, manifest_key
from backup_pipelines.core.common.stores import BackupStores
from backup_pipelines.storage import ObjectStore


def synthetic_objects(database: str, day: dt.date) -> tuple[str, str]:
    taken = dt.datetime.combine(day, dt.time(2), dt.UTC)
    return dump_object_key(database, day.isoformat(), taken, "zstd", encrypted=False), manifest_key(
        database, day.isoformat()
    )


def write_synthetic_history(
    stores: BackupStores,
    database: str,
    days: Iterable[dt.date],
    *,
    dump_days: Iterable[dt.date] = (),
    threads: int = 16,
) -> None:
    """Archives (and their references) for `days`, dumps for `dump_days`."""
    writes: list[tuple[ObjectStore, str, bytes]] = []
    for day in days:
        dump_key, manifest = synthetic_objects(database, day)
        body = json.dumps({"database": database, "partition": day.isoformat()}).encode()
        writes += [(stores.archive, dump_key, b"synthetic"), (stores.archive, manifest, body)]
        for step in ("dump", "archive"):
            writes.append((stores.refs, f"postgres/{database}/{step}/{day}.json", b"{}"))
    for day in dump_days:
        dump_key, manifest = synthetic_objects(database, day)
        writes += [(stores.dumps, dump_key, b"synthetic"), (stores.dumps, manifest, b"{}")]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda write: write[0].write_bytes(write[1], write[2]), writes))
