"""Storage rules that need no server: multipart part sizes, and the local store's writer and
key checks."""

import pytest

from backup_pipelines.storage import LocalStore, StorageError, writing
from backup_pipelines.storage.parts import MIB, part_size_for


def test_part_size_fits_the_part_limit():
    assert part_size_for(0, 10_000) == 8 * MIB
    for size in (10 * 2**30, 500 * 2**30, 4 * 2**40):
        for max_parts in (1_000, 10_000):
            assert 4 * size / part_size_for(size, max_parts) <= max_parts or (
                part_size_for(size, max_parts) == 512 * MIB
            )


def test_local_writer_abort_leaves_no_partial_file(tmp_path):
    store = LocalStore(tmp_path)
    writer = store.open_writer("db/2026-01-01/x.dump")
    with pytest.raises(RuntimeError), writing(writer):
        writer.write(b"half a dump")
        raise RuntimeError("interrupted")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_local_keys_cannot_escape_the_folder(tmp_path):
    with pytest.raises(StorageError, match="escapes"):
        LocalStore(tmp_path / "store").write_bytes("../outside", b"x")
