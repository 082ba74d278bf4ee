"""Making the archive copy: a server-side copy of the dump, proved byte-identical.

The archive's own manifest is written last, so an archive without a manifest never counts.
"""

from __future__ import annotations

import datetime as dt

from backup_pipelines.core.common.layout import manifest_key
from backup_pipelines.core.postgres.dump import ref_for
from backup_pipelines.core.postgres.manifest import (
    BackupRef,
    Manifest,
    read_manifest,
    remove_superseded,
)
from backup_pipelines.storage import ObjectStore
from backup_pipelines.storage.digest import digest_chunks


class ArchiveError(RuntimeError):
    """An archive copy could not be made; the message names the database, day and cause."""


def load_dump_manifest(dumps: ObjectStore, ref: BackupRef) -> Manifest:
    manifest = read_manifest(dumps, ref.database, ref.partition)
    if manifest is None or manifest.object_key != ref.object_key:
        raise ArchiveError(
            f"database {ref.database!r}, {ref.partition}: the dump {ref.uri} is gone or was "
            f"replaced; materialize postgres/{ref.database}/dump again (today only)"
        )
    if dumps.size(ref.object_key) != manifest.size_bytes:
        raise ArchiveError(
            f"database {ref.database!r}, {ref.partition}: {ref.uri} is missing or not the size "
            f"its manifest records ({manifest.size_bytes} bytes)"
        )
    return manifest


def archive_dump(
    dumps: ObjectStore, archive: ObjectStore, ref: BackupRef, retain_until: dt.datetime | None
) -> tuple[BackupRef, Manifest]:
    """Copy the dump to the archive, prove the copy identical, lock it (when `retain_until`
    is given: after the proof, so a bad copy can still be removed), then commit its manifest."""
    manifest = load_dump_manifest(dumps, ref)
    if retain_until is not None:
        archive.require_object_lock()
    key = manifest.object_key
    archive.copy_from(dumps, key, key)
    copied = digest_chunks(archive.read_chunks(key))
    if (copied.sha256, copied.size) != (manifest.sha256, manifest.size_bytes):
        archive.delete(key)
        raise ArchiveError(
            f"database {ref.database!r}, {ref.partition}: the copy at {archive.uri(key)} "
            f"({copied.size} bytes, sha256 {copied.sha256}) differs from the dump "
            f"({manifest.size_bytes} bytes, sha256 {manifest.sha256}); it was removed"
        )
    archived = manifest.archived(dt.datetime.now(dt.UTC))
    commit_copy(archive, archived, retain_until)
    return ref_for(archive, archived), archived


def commit_copy(store: ObjectStore, manifest: Manifest, retain_until: dt.datetime | None) -> None:
    """Make a proved copy a backup: lock it (when `retain_until` is given), write its manifest,
    then remove what the day held before."""
    key = manifest.object_key
    committed = manifest_key(manifest.database, manifest.partition)
    if retain_until is not None:
        store.retain(key, retain_until)
    store.write_bytes(committed, manifest.to_json())
    if retain_until is not None:
        store.retain(committed, retain_until)
    remove_superseded(store, manifest.database, manifest.partition, keep=key)
