"""Bucket snapshots on the local S3 endpoint: incremental copies, restore, verification."""

import datetime as dt
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from conftest import definitions_for, failure_messages, today
from dagster import AssetKey, materialize

from backup_pipelines.config import load_config
from backup_pipelines.snapshots import (
    SnapshotError,
    read_snapshot,
    restore_snapshot,
    take_snapshot,
    verify_snapshot,
)
from backup_pipelines.storage import S3Store, source_bucket_store, stores_from_config

OBJECTS = 2000
DAY1, DAY2 = "2026-11-01", "2026-11-02"


@pytest.fixture(scope="module")
def source(s3_endpoint):
    name = f"media-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=name)
    with ThreadPoolExecutor(32) as pool:
        list(
            pool.map(
                lambda n: s3.put_object(
                    Bucket=name, Key=f"uploads/{n:05d}.bin", Body=f"v1-{n}".encode()
                ),
                range(OBJECTS),
            )
        )
    return name


@pytest.fixture
def setup(write_config, s3_endpoint, bucket, source):
    config = write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
        buckets={"media": {"bucket": source, "prefix": "uploads"}},
    )
    loaded = load_config(config)
    stores = stores_from_config(loaded)
    return config, stores.snapshots, source_bucket_store(loaded, "media", stores.snapshots)


def contents(store: S3Store) -> dict[str, tuple[int, str | None]]:
    """Every key with its size and ETag (the MD5 of its bytes: these are single-part objects)."""
    return {o.key: (o.size, o.etag) for o in store.list_objects("")}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_snapshot_chain_in_dagster_and_verification_catches_damage(setup, instance):
    config, store, _ = setup
    defs = definitions_for(config)
    result = materialize(
        list(defs.assets),
        selection=[
            AssetKey(["s3", "media", "snapshot"]),
            AssetKey(["s3", "media", "verification"]),
        ],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["snapshot_manifest"].passed and checks["snapshot_objects"].passed
    assert checks["snapshot_objects"].partition == today()
    (snapshot,) = result.asset_materializations_for_node("s3__media__snapshot")
    assert snapshot.metadata["copied"].value == OBJECTS

    manifest = read_snapshot(store, "media", today())
    missing, corrupt = manifest.entries[3], manifest.entries[7]
    store.delete(missing.location)
    store.write_bytes(corrupt.location, b"bit rot")
    rng = random.Random(1)
    listing, objects = verify_snapshot(store, "media", today(), 1.0, rng)
    assert listing.passed
    assert not objects.passed
    assert f"{missing.key}: missing" in objects.description
    assert f"{corrupt.key}: stored copy differs" in objects.description
    sampled = verify_snapshot(store, "media", today(), 0.1, rng)[1]
    assert sampled.metadata["objects_checked"] == OBJECTS // 10


def test_second_snapshot_copies_only_changes_and_restores_each_day(setup, s3_endpoint):
    _, store, source = setup
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    first = take_snapshot(source, store, "media", DAY1, now())
    assert (first.copied, first.referenced) == (OBJECTS, 0)
    day1_source = contents(source)

    for n in range(10):  # modify 10, delete 5, add 5
        s3.put_object(Bucket=source.bucket, Key=f"uploads/{n:05d}.bin", Body=f"v2-{n}".encode())
    for n in range(10, 15):
        s3.delete_object(Bucket=source.bucket, Key=f"uploads/{n:05d}.bin")
    for n in range(OBJECTS, OBJECTS + 5):
        s3.put_object(Bucket=source.bucket, Key=f"uploads/{n:05d}.bin", Body=b"new")
    second = take_snapshot(source, store, "media", DAY2, now())
    assert (second.copied, second.referenced) == (15, OBJECTS - 15)
    assert second.bytes_copied == sum(len(f"v2-{n}") for n in range(10)) + 5 * 3
    assert len(list(store.list_keys(f"media/{DAY2}/objects/"))) == 15

    for day, expected in ((DAY1, day1_source), (DAY2, contents(source))):
        target_bucket = f"restore-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=target_bucket)
        target = S3Store(store.client, target_bucket, "restored")
        assert restore_snapshot(store, "media", day, target) == len(expected)
        assert contents(target) == expected  # deleted objects live on in the older snapshot
        with pytest.raises(SnapshotError, match="is not empty"):
            restore_snapshot(store, "media", day, target)
