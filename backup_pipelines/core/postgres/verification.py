"""Checking backups: is the dump complete, is the archive intact and readable, is its size sane.

Every check returns a `CheckOutcome` with the evidence; the Dagster wiring turns them into
asset check results, so the asset-checks tab is the audit record.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.client_tools import ClientTools
from backup_pipelines.core.common.encryption import ArchiveKey, decoding_stages, key_problem
from backup_pipelines.core.common.streams import SIGPIPE_EXIT, Pipeline, first_cause
from backup_pipelines.core.postgres.manifest import (
    BackupRef,
    Manifest,
    list_backup_days,
    read_manifest,
)
from backup_pipelines.core.postgres.toc import TableOfContents, parse_toc, relations_missing_data
from backup_pipelines.storage import ObjectStore
from backup_pipelines.storage.digest import HashingCounter, StreamDigest, digest_chunks


@dataclass(frozen=True)
class ArchiveInspection:
    digest: StreamDigest | None  # None when reading stopped after the table of contents
    toc: TableOfContents | None  # None when pg_restore could not read the archive
    problem: str | None
    # Of decoding every byte (read_all): the first stage that failed, None when all passed.
    decode_problem: str | None = None


def inspect_archive(
    chunks: Iterable[bytes],
    manifest: Manifest,
    key: ArchiveKey | None,
    tools: ClientTools,
    *,
    read_all: bool,
) -> ArchiveInspection:
    """Feed an archive to `pg_restore --list` (decrypting and decompressing on the way) and
    hash it all.

    With `read_all=False` reading stops once pg_restore has its table of contents, which
    sits at the front of the archive. With `read_all=True` the same bytes also go, whole,
    through a second decoding into `pg_restore --file=/dev/null`, which reads every data block:
    each stage's own integrity check (age's authentication, zstd's frame checksums, gzip's
    CRC, pg_restore's block structure) then covers every byte.
    """
    problem = key_problem(manifest, key)
    if problem:
        return ArchiveInspection(digest_chunks(chunks) if read_all else None, None, problem)
    pg_restore = tools.program("pg_restore")
    with contextlib.ExitStack() as stack:
        decoding, pass_fds = stack.enter_context(decoding_stages(manifest, key))
        listing_stages = [*decoding, ("pg_restore --list", [pg_restore, "--list"])]
        pipelines = [Pipeline(listing_stages, feed=True, pass_fds=pass_fds)]
        if read_all:
            decoding, pass_fds = stack.enter_context(decoding_stages(manifest, key))
            every_block = [*decoding, ("pg_restore", [pg_restore, "--file=/dev/null"])]
            pipelines.append(
                Pipeline(every_block, feed=True, output=subprocess.DEVNULL, pass_fds=pass_fds)
            )
    listing_pipeline = pipelines[0]
    listing: list[bytes] = []
    reader = threading.Thread(
        target=lambda: listing.extend(listing_pipeline.read_chunks()), daemon=True
    )
    reader.start()
    counter, fed_all = HashingCounter(), [True] * len(pipelines)
    try:
        with contextlib.closing(iter(chunks)) as source:  # type: ignore[type-var]
            for chunk in source:
                counter.update(chunk)
                for number, pipeline in enumerate(pipelines):
                    if fed_all[number] and not _feed(pipeline, chunk):
                        fed_all[number] = False
                if not read_all and not fed_all[0]:
                    break
        for pipeline in pipelines:
            with contextlib.suppress(BrokenPipeError):
                pipeline.stdin.close()
    except BaseException:
        for pipeline in pipelines:
            pipeline.kill()
        raise
    reader.join()
    results = [pipeline.wait() for pipeline in pipelines]
    listed = results[0][-1][1] == 0
    return ArchiveInspection(
        digest=counter.digest() if read_all else None,
        toc=parse_toc(b"".join(listing).decode(errors="replace")) if listed else None,
        problem=_first_problem(results[0], fed_all[0]),
        decode_problem=_first_problem(results[1], fed_all[1], early_end_ok=False)
        if read_all
        else None,
    )


def _feed(pipeline: Pipeline, chunk: bytes) -> bool:
    try:
        pipeline.stdin.write(chunk)
        return True
    except BrokenPipeError:
        return False


def _first_problem(
    results: list[tuple[str, int, str]], fed_all: bool, *, early_end_ok: bool = True
) -> str | None:
    """The first stage that failed. A decompressor cut off because pg_restore had read all it
    wanted (the table of contents) did not fail, unless every byte had to be decoded."""
    pg_restore_ok = results[-1][1] == 0
    failed = [
        (name, code, stderr)
        for name, code, stderr in results
        if code != 0
        and not (early_end_ok and pg_restore_ok and code == SIGPIPE_EXIT and not fed_all)
    ]
    if failed:
        name, code, stderr = first_cause(failed)
        return f"{name} exited with {code}: {stderr or 'no message'}"
    if not fed_all and not early_end_ok:
        return f"{results[-1][0]} stopped reading before the end of the archive"
    return None


def _toc_outcome(
    name: str,
    inspection: ArchiveInspection,
    manifest: Manifest,
    ref: BackupRef,
    configured_name: str | None,
) -> CheckOutcome:
    where = ref.uri
    if inspection.toc is None:
        return CheckOutcome(
            name,
            False,
            f"cannot read {where}: {inspection.problem}",
            {"uri": where},
        )
    missing = relations_missing_data(inspection.toc, manifest.relation_counts)
    evidence = {
        "uri": where,
        "dumped_database": inspection.toc.dumped_database or "",
        "toc_entries": inspection.toc.entries,
        "relations_in_manifest": len(manifest.relations),
        "relations_with_data": len(inspection.toc.data_oids),
        "rows_in_snapshot": manifest.total_rows,
        "relations_missing_data": [r.qualified_name for r in missing],
    }
    look_alike = manifest.identity_problem(
        ref.database, inspection.toc.dumped_database, configured_name
    )
    if look_alike:
        return CheckOutcome(name, False, f"{where}: {look_alike}", evidence)
    if inspection.decode_problem:
        return CheckOutcome(
            name,
            False,
            f"{where} cannot be decoded whole: {inspection.decode_problem}",
            evidence,
        )
    if missing:
        names = ", ".join(f"{r.qualified_name} ({r.rows} rows)" for r in missing[:20])
        return CheckOutcome(name, False, f"{where} lacks the data of {names}", evidence)
    if inspection.toc.entries == 0:
        return CheckOutcome(name, False, f"{where} is an empty archive", evidence)
    whole = "every byte decoded and every data block read; " if inspection.digest else ""
    return CheckOutcome(
        name,
        True,
        f"pg_restore reads {where}; {whole}all {len(manifest.relations)} relations have their data",
        evidence,
    )


def check_dump_complete(
    store: ObjectStore,
    ref: BackupRef,
    manifest: Manifest,
    tools: ClientTools,
    key: ArchiveKey | None = None,
    configured_name: str | None = None,
) -> CheckOutcome:
    """The stored dump has the recorded size and holds the data of every non-empty relation."""
    stored_size = store.size(ref.object_key)
    if stored_size != manifest.size_bytes or stored_size == 0:
        return CheckOutcome(
            names.DUMP_COMPLETE,
            False,
            f"{ref.uri} holds {stored_size} bytes, the dump wrote {manifest.size_bytes}",
            {"uri": ref.uri, "stored_bytes": stored_size, "written_bytes": manifest.size_bytes},
        )
    inspection = inspect_archive(
        store.read_chunks(ref.object_key), manifest, key, tools, read_all=False
    )
    return _toc_outcome(names.DUMP_COMPLETE, inspection, manifest, ref, configured_name)


def check_archive(
    store: ObjectStore,
    ref: BackupRef,
    manifest: Manifest,
    tools: ClientTools,
    key: ArchiveKey | None = None,
    configured_name: str | None = None,
) -> list[CheckOutcome]:
    """Read the archive copy back whole: checksum, then pg_restore's view of its contents."""
    chunks = store.read_chunks(ref.object_key)
    inspection = inspect_archive(chunks, manifest, key, tools, read_all=True)
    return archive_outcomes(inspection, manifest, ref, configured_name)


def archive_outcomes(
    inspection: ArchiveInspection, manifest: Manifest, ref: BackupRef, configured_name: str | None
) -> list[CheckOutcome]:
    """What a whole read of a copy (`read_all`) proves: its checksum, then its contents."""
    assert inspection.digest is not None
    actual = inspection.digest
    checksum = CheckOutcome(
        names.ARCHIVE_CHECKSUM,
        actual.sha256 == manifest.sha256 and actual.size == manifest.size_bytes,
        f"SHA-256 and size of {ref.uri} "
        + ("match the dump" if actual.sha256 == manifest.sha256 else "DIFFER from the dump"),
        {
            "uri": ref.uri,
            "sha256_expected": manifest.sha256,
            "sha256_actual": actual.sha256,
            "size_expected": manifest.size_bytes,
            "size_actual": actual.size,
        },
    )
    return [
        checksum,
        _toc_outcome(names.ARCHIVE_CONTENTS, inspection, manifest, ref, configured_name),
    ]


def recent_sizes(store: ObjectStore, database: str, before_day: str, count: int) -> list[int]:
    days = [day for day in list_backup_days(store, database) if day < before_day][-count:]
    manifests = (read_manifest(store, database, day) for day in days)
    return [manifest.size_bytes for manifest in manifests if manifest is not None]


def check_size_change(size: int, history: list[int], threshold: float) -> CheckOutcome:
    """Warn when a backup's size moves more than `threshold` from the recent median."""
    if not history:
        return CheckOutcome(
            names.SIZE_CHANGE,
            True,
            "no earlier backup to compare with",
            {"size_bytes": size},
        )
    median = statistics.median(history)
    change = (size - median) / median if median else float("inf")
    evidence = {
        "size_bytes": size,
        "median_of_previous_bytes": int(median),
        "previous_backups_compared": len(history),
        "change_fraction": round(change, 4),
        "threshold_fraction": threshold,
    }
    passed = abs(change) <= threshold
    verdict = "within" if passed else "beyond"
    return CheckOutcome(
        names.SIZE_CHANGE,
        passed,
        f"size {size} bytes is {change:+.1%} from the median of the last {len(history)} "
        f"backups ({int(median)} bytes), {verdict} ±{threshold:.0%}",
        evidence,
    )
