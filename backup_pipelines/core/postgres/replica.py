"""The second copy: a verified archive copied to the replica store (server-side where the two
stores allow it, streamed otherwise) and proved there by one whole read (size, SHA-256 and
every byte decoded, as `archive_contents` does) before its manifest commits it.

A copy that cannot be written or does not prove identical is removed: the replica store never
holds a manifest for a copy that was not proved.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.client_tools import ClientTools
from backup_pipelines.core.common.encryption import ArchiveKey
from backup_pipelines.core.postgres.archive import ArchiveError, commit_copy
from backup_pipelines.core.postgres.dump import ref_for
from backup_pipelines.core.postgres.manifest import Manifest, read_manifest
from backup_pipelines.core.postgres.verification import archive_outcomes, inspect_archive
from backup_pipelines.storage import ObjectStore, StorageError


def archived_manifest(archive: ObjectStore, database: str, day: str) -> Manifest:
    """The archive's manifest of `day`: what the replica must equal."""
    manifest = read_manifest(archive, database, day)
    if manifest is None:
        raise ArchiveError(
            f"database {database!r}, {day}: there is no archive copy to replicate (no manifest "
            f"in {archive.uri('')}); back up and verify that day first"
        )
    return manifest


def replicate_archive(
    archive: ObjectStore,
    replica: ObjectStore,
    manifest: Manifest,
    tools: ClientTools,
    key: ArchiveKey | None,
    configured_name: str | None,
    retain_until: dt.datetime | None,
) -> CheckOutcome:
    """Copy the archive `manifest` describes to `replica` and prove the copy there; the
    outcome is the replica's check (passed: the copy is committed)."""
    object_key, day = manifest.object_key, manifest.partition
    subject = f"database {manifest.database!r}, {day}"
    evidence: dict[str, object] = {
        "source_uri": archive.uri(object_key),
        "uri": replica.uri(object_key),
    }
    try:
        if retain_until is not None:
            replica.require_object_lock()
        replica.copy_from(archive, object_key, object_key)
        chunks = replica.read_chunks(object_key)
        inspection = inspect_archive(chunks, manifest, key, tools, read_all=True)
    except StorageError as error:
        _remove(replica, object_key)
        return CheckOutcome(
            names.REPLICA_VERIFIED,
            False,
            f"{subject}: the replica could not be written or read back: {error}. Nothing was "
            "committed in the replica store",
            evidence,
        )
    checksum, contents = archive_outcomes(
        inspection, manifest, ref_for(replica, manifest), configured_name
    )
    evidence.update(checksum.metadata, **contents.metadata)
    failed = [outcome for outcome in (checksum, contents) if not outcome.passed]
    if failed:
        _remove(replica, object_key)
        return CheckOutcome(
            names.REPLICA_VERIFIED,
            False,
            f"{subject}: the copy in the replica store is not the archive: "
            f"{failed[0].description}. It was removed; nothing was committed",
            evidence,
        )
    commit_copy(replica, manifest.replicated(dt.datetime.now(dt.UTC)), retain_until)
    return CheckOutcome(
        names.REPLICA_VERIFIED,
        True,
        f"{evidence['uri']} read back whole: {manifest.size_bytes} bytes, SHA-256 as the "
        f"archive's; {contents.description}",
        evidence,
    )


def _remove(store: ObjectStore, key: str) -> None:
    """Best effort: a store that refused the write may refuse the delete too."""
    with contextlib.suppress(StorageError):
        store.delete(key)
