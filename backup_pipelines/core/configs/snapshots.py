"""Configuration snapshots: take one (tar, zstd, age where `encryption:` is set), read it back,
restore it into a folder, and compare it with the version before.

Per source and day (core/common/layout.py): one archive and the manifest, written last: every
file with its size, mode, owner and SHA-256. A version identical to the previous one (the same
files, checksums, modes and owners) is recorded by a manifest naming the earlier archive,
after that archive was read back intact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckOutcome
from backup_pipelines.core.common.encryption import (
    AGE,
    ENCRYPTION_METHOD,
    ArchiveKey,
    decoding_stages,
    key_problem,
)
from backup_pipelines.core.common.layout import (
    config_manifest_key,
    config_object_key,
    config_prefix,
    day_of_config_key,
    is_day_manifest,
)
from backup_pipelines.core.common.streams import SIGPIPE_EXIT, Compression, Pipeline, first_cause
from backup_pipelines.core.configs.changes import (
    DIFF_FILE_LIMIT,
    Changes,
    Redactor,
    as_text,
    compare,
)
from backup_pipelines.core.configs.sources import Collection, ConfigFile
from backup_pipelines.storage import ObjectStore, writing
from backup_pipelines.storage.digest import CHUNK_SIZE, HashingCounter

ZSTD_LEVEL = 10  # configuration is small: a high level costs little
_LISTED = 20


class ConfigSnapshotError(RuntimeError):
    """A snapshot could not be stored, read or restored; the message says which and why."""


@dataclass(frozen=True)
class ConfigManifest:
    name: str
    partition: str
    kind: str  # files, command, http or server
    taken_at: str
    object_key: str
    stored_on: str  # the day whose run stored the archive
    unchanged: bool  # the same files as the version before: its archive is named, not copied
    size_bytes: int
    sha256: str
    tree_sha256: str  # of the files' paths, checksums, modes and owners
    files: list[dict[str, Any]]
    unmatched: list[str] = field(default_factory=list)
    missing_expectations: list[str] = field(default_factory=list)
    compression: Compression = "zstd"
    encryption: str | None = None
    encryption_recipient: str | None = None

    @property
    def subject(self) -> str:
        return f"config {self.name!r}"

    def entries(self) -> list[ConfigFile]:
        return [ConfigFile(**entry) for entry in self.files]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ConfigManifest:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class TakenSnapshot:
    manifest: ConfigManifest
    previous: ConfigManifest | None
    changes: Changes | None  # None for the first version
    notes: list[str]


def config_days(store: ObjectStore, name: str) -> list[str]:
    """Days with a committed snapshot (a manifest), oldest first."""
    return sorted(
        day_of_config_key(key)
        for key in store.list_keys(config_prefix(name))
        if key.endswith("/manifest.json") and is_day_manifest(key.split("/", 1)[1])
    )


def read_config_manifest(store: ObjectStore, name: str, day: str) -> ConfigManifest | None:
    key = config_manifest_key(name, day)
    return ConfigManifest.from_json(store.read_bytes(key)) if store.exists(key) else None


def previous_version(store: ObjectStore, name: str, day: str) -> ConfigManifest | None:
    """The version a new snapshot of `day` follows: the day's own, else the newest before it."""
    days = [d for d in config_days(store, name) if d <= day]
    return read_config_manifest(store, name, days[-1]) if days else None


def tree_digest(files: list[ConfigFile]) -> str:
    identity = sorted((f.path, f.sha256, f.mode, f.owner, f.group) for f in files)
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def missing_expectations(collection: Collection, expect: list[str]) -> list[str]:
    """The expected patterns no delivered text file matches."""
    patterns = [re.compile(pattern, re.MULTILINE) for pattern in expect]
    found: set[int] = set()
    for position, _ in enumerate(collection.files):
        text = staged_text(collection, position)
        if text is not None:
            found |= {n for n, pattern in enumerate(patterns) if pattern.search(text)}
    return [expect[n] for n in range(len(expect)) if n not in found]


def staged_text(collection: Collection, position: int) -> str | None:
    if collection.files[position].size > DIFF_FILE_LIMIT:
        return None
    return as_text(collection.staged(position).read_bytes())


def take_config_snapshot(
    store: ObjectStore,
    collection: Collection,
    day: str,
    now: dt.datetime,
    *,
    key: ArchiveKey | None,
    expect: list[str],
    redactor: Redactor,
) -> TakenSnapshot:
    """Store `collection` as `day`'s version (or record it as unchanged) and say what changed."""
    name, files = collection.name, collection.files
    previous = previous_version(store, name, day)
    tree = tree_digest(files)
    notes: list[str] = []
    recipient = key.recipient if key else None
    reusable = (
        previous is not None
        and previous.tree_sha256 == tree
        and previous.encryption_recipient == recipient
    )
    if reusable and previous is not None:
        problem = stored_object_problem(store, previous)
        if problem is None:
            object_key, stored_on = previous.object_key, previous.stored_on
            size, sha256 = previous.size_bytes, previous.sha256
        else:
            notes.append(f"the archive stored on {previous.stored_on} failed its readback")
            notes.append(f"({problem}); this version is stored again")
            reusable = False
    changes = _changes(store, previous, collection, key, redactor, now) if previous else None
    if not reusable:
        object_key = config_object_key(name, day, now, tree, encrypted=key is not None)
        size, sha256 = _store_archive(store, collection, object_key, key)
        stored_on = day
    manifest = ConfigManifest(
        name=name,
        partition=day,
        kind=collection.kind,
        taken_at=now.isoformat(),
        object_key=object_key,
        stored_on=stored_on,
        unchanged=reusable,
        size_bytes=size,
        sha256=sha256,
        tree_sha256=tree,
        files=[f.to_dict() for f in files],
        unmatched=collection.unmatched,
        missing_expectations=missing_expectations(collection, expect),
        encryption=ENCRYPTION_METHOD if key else None,
        encryption_recipient=recipient,
    )
    store.write_bytes(config_manifest_key(name, day), manifest.to_json())
    if previous is not None and previous.partition == day and previous.object_key != object_key:
        store.delete(previous.object_key)  # the day's earlier version, now superseded
    return TakenSnapshot(manifest, previous, changes, notes)


def _store_archive(
    store: ObjectStore, collection: Collection, object_key: str, key: ArchiveKey | None
) -> tuple[int, str]:
    """Tar the staged files (with their original names, modes and owners), compress and
    encrypt them into one object; (size, sha256) of what was stored."""
    archive = collection.folder / "snapshot.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for position, item in enumerate(collection.files):
            tar.addfile(_tar_info(item), collection.staged(position).open("rb"))
    stages = [("zstd", ["zstd", "-q", "-c", f"-{ZSTD_LEVEL}", str(archive)])]
    if key is not None:
        stages.append((AGE, key.encrypt_command()))
    writer = store.open_writer(object_key, expected_size=archive.stat().st_size)
    with writing(writer):
        failed = Pipeline(stages).drain_into(writer.write)
        if failed:
            stage, code, err = failed
            raise ConfigSnapshotError(
                f"config {collection.name!r}: {stage} failed (exit {code}): {err or 'no message'}"
            )
        digest = writer.commit()
    return digest.size, digest.sha256


def _tar_info(item: ConfigFile) -> tarfile.TarInfo:
    info = tarfile.TarInfo(item.path)
    info.size = item.size
    info.mode = int(item.mode, 8) if item.mode else 0o600
    info.mtime = int(item.mtime)
    info.uid, info.gid = item.uid or 0, item.gid or 0
    info.uname, info.gname = item.owner or "", item.group or ""
    return info


def _changes(
    store: ObjectStore,
    previous: ConfigManifest,
    collection: Collection,
    key: ArchiveKey | None,
    redactor: Redactor,
    now: dt.datetime,
) -> Changes:
    before, after = previous.entries(), collection.files
    old = {f.path: f.sha256 for f in before}
    changed = {f.path for f in after if f.path in old and old[f.path] != f.sha256}
    new_texts = {
        f.path: text
        for position, f in enumerate(after)
        if f.path in changed and (text := staged_text(collection, position)) is not None
    }
    old_texts: dict[str, str] = {}

    def keep_text(info: tarfile.TarInfo, content: IO[bytes]) -> None:
        if info.name in new_texts and (text := as_text(content.read())) is not None:
            old_texts[info.name] = text

    if new_texts:
        read_back(store, previous, key, keep_text)
    labels = (f"{previous.taken_at[:19]}Z", f"{now.isoformat()[:19]}Z")
    return compare(before, after, old_texts, new_texts, redactor, labels)


# --- reading back -----------------------------------------------------------------------------
def stored_object_problem(store: ObjectStore, manifest: ConfigManifest) -> str | None:
    """Why the stored archive is not the one the manifest describes (None: it is)."""
    counter = HashingCounter()
    try:
        for chunk in store.read_chunks(manifest.object_key):
            counter.update(chunk)
    except Exception as error:  # any store's "not found" or read error
        return f"{store.uri(manifest.object_key)} cannot be read: {error}"
    digest = counter.digest()
    if (digest.size, digest.sha256) != (manifest.size_bytes, manifest.sha256):
        return (
            f"{store.uri(manifest.object_key)} has {digest.size:,} bytes with SHA-256 "
            f"{digest.sha256[:16]}…, the manifest says {manifest.size_bytes:,} bytes, "
            f"{manifest.sha256[:16]}…"
        )
    return None


Visitor = Callable[[tarfile.TarInfo, IO[bytes]], None]


def read_back(
    store: ObjectStore, manifest: ConfigManifest, key: ArchiveKey | None, visit: Visitor
) -> str | None:
    """Download the archive, check it is the stored one, decode it and show every file to
    `visit`; the first problem met, or None."""
    problem = key_problem(manifest, key)
    if problem:
        return problem
    with tempfile.TemporaryDirectory(prefix="backup-pipelines-config-") as folder:
        local = Path(folder) / "archive"
        counter = HashingCounter()
        try:
            with local.open("wb") as target:
                for chunk in store.read_chunks(manifest.object_key):
                    counter.update(chunk)
                    target.write(chunk)
        except Exception as error:  # any store's "not found" or read error
            return f"{store.uri(manifest.object_key)} cannot be read: {error}"
        digest = counter.digest()
        if (digest.size, digest.sha256) != (manifest.size_bytes, manifest.sha256):
            return stored_object_problem(store, manifest) or "the archive changed while read"
        with local.open("rb") as source, decoding_stages(manifest, key) as (stages, fds):
            pipeline = Pipeline(stages, source=source, pass_fds=fds)
        unreadable = _visit_members(pipeline, visit)
    failures = [result for result in pipeline.wait() if result[1] != 0]
    if failures and not (unreadable is None and _only_broken_pipes(failures)):
        stage, code, err = first_cause(failures)
        return f"{stage} failed (exit {code}): {err or 'no message'}"
    return unreadable


def _visit_members(pipeline: Pipeline, visit: Visitor) -> str | None:
    """Show every file of the tar stream `pipeline` decodes to `visit`; why it could not be
    read as a tar stream, or None."""
    try:
        with tarfile.open(fileobj=pipeline.stdout, mode="r|") as tar:
            for info in tar:
                content = tar.extractfile(info) if info.isfile() else None
                if content is not None:
                    visit(info, content)
    except (tarfile.TarError, EOFError) as error:
        return f"the archive is not a readable tar file: {error}"
    except BaseException:
        pipeline.kill()
        raise
    return None


def _only_broken_pipes(failures: list[tuple[str, int, str]]) -> bool:
    """Every failed stage stopped because its reader stopped (a decoder may still hold the
    tar's trailing padding when the reader has what it needs): no stage's own error."""
    return first_cause(failures)[1] == SIGPIPE_EXIT


def verify_config_snapshot(
    store: ObjectStore, manifest: ConfigManifest, key: ArchiveKey | None
) -> CheckOutcome:
    """The stored archive is the one written, it decodes, and it holds every file of the
    manifest with its size and SHA-256, and nothing else."""
    expected = {f.path: f for f in manifest.entries()}
    found: dict[str, tuple[int, str]] = {}

    def hash_member(info: tarfile.TarInfo, content: IO[bytes]) -> None:
        digest, size = hashlib.sha256(), 0
        for chunk in iter(lambda: content.read(CHUNK_SIZE), b""):
            digest.update(chunk)
            size += len(chunk)
        found[info.name] = (size, digest.hexdigest())

    problem = read_back(store, manifest, key, hash_member)
    problems = [problem] if problem else []
    if not problem:
        problems += [f"{path}: missing" for path in sorted(expected.keys() - found.keys())]
        problems += [f"{path}: not in the manifest" for path in sorted(found.keys() - expected)]
        problems += [
            f"{path}: {found[path][0]:,} bytes, SHA-256 {found[path][1][:16]}…, the manifest "
            f"says {item.size:,} bytes, {item.sha256[:16]}…"
            for path, item in sorted(expected.items())
            if path in found and found[path] != (item.size, item.sha256)
        ]
    where = store.uri(manifest.object_key)
    return CheckOutcome(
        names.CONFIG_READBACK,
        not problems,
        f"read back {where}: its {len(expected)} files with their sizes and checksums"
        if not problems
        else f"read back {where}: " + "; ".join(problems[:_LISTED]),
        {
            "object": where,
            "files_checked": len(found),
            "files_in_manifest": len(expected),
            "problems": problems[:50],
        },
    )


def completeness(manifest: ConfigManifest, source: str) -> CheckOutcome:
    """Every configured path matched and every expected section is there."""
    problems = [f"{pattern}: matched no file" for pattern in manifest.unmatched] + [
        f"expected {pattern!r}: found in no delivered file"
        for pattern in manifest.missing_expectations
    ]
    return CheckOutcome(
        names.CONFIG_COMPLETE,
        not problems,
        f"{len(manifest.files)} files delivered by {source}; every path matched and every "
        "expected section is present"
        if not problems
        else f"{source}: " + "; ".join(problems[:_LISTED]),
        {
            "files": [f["path"] for f in manifest.files],
            "unmatched": manifest.unmatched,
            "missing_expectations": manifest.missing_expectations,
        },
    )


# --- restoring --------------------------------------------------------------------------------
def restore_config(
    store: ObjectStore,
    manifest: ConfigManifest,
    key: ArchiveKey | None,
    target: Path,
    *,
    overwrite: bool = False,
) -> list[str]:
    """Write `manifest`'s version under `target` (each file at its path below it, with its
    mode, and its owner when run as root); returns the paths written. Files that exist are
    refused unless `overwrite`; every file is checked against the manifest as it is written."""
    expected = {f.path: f for f in manifest.entries()}
    existing = sorted(p for p in expected if (target / p).exists())
    if existing and not overwrite:
        raise ConfigSnapshotError(
            f"config {manifest.name!r}: {len(existing)} files exist under {target} (e.g. "
            f"{target / existing[0]}); restore into an empty folder, or set overwrite: true "
            "to replace them"
        )
    written: list[str] = []
    problems: list[str] = []

    def write_member(info: tarfile.TarInfo, content: IO[bytes]) -> None:
        item = expected.get(info.name)
        destination = (target / info.name).resolve()
        if item is None or not destination.is_relative_to(target.resolve()):
            problems.append(f"{info.name}: not in the manifest")
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.restoring")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for chunk in iter(lambda: content.read(CHUNK_SIZE), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != item.sha256:
            partial.unlink()
            problems.append(f"{info.name}: its checksum differs from the manifest's")
            return
        os.chmod(partial, info.mode & 0o7777)
        if os.geteuid() == 0 and item.uid is not None:
            os.chown(partial, item.uid, item.gid if item.gid is not None else -1)
        os.utime(partial, (info.mtime, info.mtime))
        partial.replace(destination)
        written.append(info.name)

    target.mkdir(parents=True, exist_ok=True)
    problem = read_back(store, manifest, key, write_member)
    missing = sorted(expected.keys() - set(written))
    if problem or problems or missing:
        details = ([problem] if problem else []) + problems + [f"{p}: missing" for p in missing]
        raise ConfigSnapshotError(
            f"config {manifest.name!r}, {manifest.partition}: restore incomplete: "
            + "; ".join(details[:_LISTED])
        )
    return written
