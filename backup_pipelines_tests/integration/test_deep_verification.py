"""archive_contents decodes the whole archive. Each damage here is made *before* the checksum
is taken (the manifest is rewritten to match the damaged bytes, as a bad disk or a bug on the
writer would leave it), so archive_checksum passes and only the deep decode can catch it."""

import dataclasses
import hashlib
import subprocess

import pytest

from backup_pipelines.core.common.client_tools import find_client_tools
from backup_pipelines.core.common.encryption import key_from_identity
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.postgres.dump import DumpSettings, take_dump
from backup_pipelines.core.postgres.verification import check_archive
from backup_pipelines.storage import LocalStore
from backup_pipelines_tests.support.config import BACKUP_PASSWORD, today


def age_identity() -> str:
    generated = subprocess.run(["age-keygen"], check=True, capture_output=True, text=True).stdout
    return next(line for line in generated.splitlines() if line.startswith("AGE-SECRET-KEY-"))


def dumped(cluster, tmp_path, settings: DumpSettings):
    store = LocalStore(tmp_path)
    connection = Connection.from_url(
        "agentic", cluster.url("agentic", user="backup", password=BACKUP_PASSWORD)
    )
    ref, manifest = take_dump(connection, store, today(), settings)
    return store, ref, manifest


def damaged_before_hashing(store, ref, manifest, damage):
    """Apply `damage` to the stored bytes and record the result's own checksum and size."""
    path = store.root / ref.object_key
    data = damage(path.read_bytes())
    path.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    return (
        dataclasses.replace(ref, sha256=sha256, size_bytes=len(data)),
        dataclasses.replace(manifest, sha256=sha256, size_bytes=len(data)),
    )


def flip_middle_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


def cut_last_quarter(data: bytes) -> bytes:
    return data[: len(data) * 3 // 4]


def outcomes(store, ref, manifest, key=None):
    checksum, contents = check_archive(store, ref, manifest, find_client_tools(None), key)
    return checksum, contents


@pytest.mark.parametrize(
    ("compression", "damage", "stages"),
    [
        ("zstd", flip_middle_byte, ("zstd exited",)),  # a frame's checksum no longer matches
        ("zstd", cut_last_quarter, ("zstd exited",)),  # a truncated frame
        # gzip's CRC is checked at the end of the stream; pg_restore may trip over the
        # garbled block first. Either way the stage that gave up is named.
        ("gzip", flip_middle_byte, ("gzip exited", "pg_restore exited")),
        ("none", cut_last_quarter, ("pg_restore exited",)),  # data blocks missing
    ],
)
def test_damage_inside_the_data_fails_archive_contents(
    cluster, tmp_path, compression, damage, stages
):
    store, ref, manifest = dumped(cluster, tmp_path, DumpSettings(compression=compression))
    checksum, contents = outcomes(store, ref, manifest)
    assert checksum.passed and contents.passed, contents.description
    assert "every byte decoded and every data block read" in contents.description

    ref, manifest = damaged_before_hashing(store, ref, manifest, damage)
    checksum, contents = outcomes(store, ref, manifest)
    assert checksum.passed  # the bytes are what the manifest says ...
    assert not contents.passed  # ... but they do not decode
    assert "cannot be decoded whole" in contents.description or "cannot read" in (
        contents.description
    )
    assert any(stage in contents.description for stage in stages), contents.description


def test_altered_ciphertext_fails_age_authentication(cluster, tmp_path):
    key = key_from_identity(age_identity(), "encryption.identity")
    store, ref, manifest = dumped(cluster, tmp_path, DumpSettings(encrypt_with=key))
    assert outcomes(store, ref, manifest, key)[1].passed

    ref, manifest = damaged_before_hashing(store, ref, manifest, flip_middle_byte)
    checksum, contents = outcomes(store, ref, manifest, key)
    assert checksum.passed and not contents.passed
    assert "age exited" in contents.description
