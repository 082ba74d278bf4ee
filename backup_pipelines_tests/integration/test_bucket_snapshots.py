"""Bucket snapshots on the local S3 endpoint: incremental copies, restore, verification."""

import datetime as dt
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from dagster import AssetKey, build_sensor_context, materialize

from backup_pipelines import names
from backup_pipelines.core.buckets.snapshots import (
    SnapshotError,
    read_snapshot,
    restore_snapshot,
    take_snapshot,
    verify_snapshot,
)
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import source_bucket_store, stores_from_config
from backup_pipelines.storage import S3Store
from backup_pipelines_tests.support.config import today
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    record_check_evaluations,
)

OBJECTS = 200  # enough for a 10% sample of 20; scale is benchmarks
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
    assert checks[names.SNAPSHOT_MANIFEST].passed and checks[names.SNAPSHOT_OBJECTS].passed
    assert checks[names.SNAPSHOT_OBJECTS].partition == today()
    (snapshot,) = result.asset_materializations_for_node("s3__media__snapshot")
    assert snapshot.metadata["copied"].value == OBJECTS
    usage = materialize(
        list(defs.assets),
        selection=[AssetKey(["storage_usage"])],
        instance=instance,
        resources=defs.resources,
    )
    (measured,) = usage.asset_materializations_for_node("storage_usage")
    assert measured.metadata["s3_media_objects"].value == OBJECTS + 2  # + manifest and listing

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


def test_retention_never_deletes_an_object_a_kept_snapshot_references(
    write_config, s3_endpoint, bucket, instance
):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    small = f"small-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=small)
    for n in range(20):
        s3.put_object(Bucket=small, Key=f"f{n:02d}", Body=f"v1-{n}".encode())
    config = write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
        buckets={"media": {"bucket": small}},
        retention={"daily": 1, "weekly": 0, "monthly": 0, "min_keep": 1},
    )
    loaded = load_config(config)
    store = stores_from_config(loaded).snapshots
    source = source_bucket_store(loaded, "media", store)
    days = [(dt.date.today() - dt.timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    for n, day in enumerate(days):
        s3.put_object(Bucket=small, Key="f00", Body=f"changed on day {n}".encode())
        take_snapshot(source, store, "media", day, now())
        record_check_evaluations(
            instance,
            AssetKey(["s3", "media", "verification"]),
            (names.SNAPSHOT_MANIFEST, names.SNAPSHOT_OBJECTS),
            day,
        )
    expected = contents(source)
    defs = definitions_for(config)
    sensor = defs.resolve_sensor_def(names.RETENTION_SENSOR)
    with build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
    ) as context:
        (request,) = sensor.evaluate_tick(context).run_requests
    planned = request.run_config["ops"]["delete_expired_backups"]["config"]["deletions"]
    assert sorted(d["partition"] for d in planned) == days[:2]
    assert {(d["kind"], d["name"]) for d in planned} == {("bucket", "media")}
    first = next(d for d in planned if d["partition"] == days[0])
    # Day 0 copied all 20 objects; 19 are still referenced by the kept snapshot.
    assert [uri.rsplit("/", 1)[-1] for uri in first["objects"]] == [
        "manifest.json",
        "listing.json",
        "f00",
    ]
    result = defs.resolve_job_def("prune_backups").execute_in_process(
        run_config=request.run_config, instance=instance, resources=defs.resources
    )
    assert result.success
    target = S3Store(store.client, small, "restored-after-prune")
    assert restore_snapshot(store, "media", days[2], target) == 20
    assert contents(target) == expected


def test_a_source_with_its_own_keys_gets_the_same_retries_and_timeouts(
    write_config, s3_endpoint, bucket, source, monkeypatch
):
    monkeypatch.setenv("MEDIA_KEY_ID", "media-key")
    monkeypatch.setenv("MEDIA_SECRET", "media-secret")
    loaded = load_config(
        write_config(
            storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
            buckets={
                "media": {
                    "bucket": source,
                    "prefix": "uploads",
                    "access_key_id": "${MEDIA_KEY_ID}",
                    "secret_access_key": "${MEDIA_SECRET}",
                }
            },
        )
    )
    backup_store = stores_from_config(loaded).snapshots
    media = source_bucket_store(loaded, "media", backup_store)
    assert media.client is not backup_store.client  # its own credentials
    for client in (media.client, backup_store.client):
        settings = client.meta.config
        assert settings.retries["mode"] == "standard"
        assert settings.retries["total_max_attempts"] == 6  # botocore counts the first try
        assert (settings.connect_timeout, settings.read_timeout) == (10, 60)
    assert sum(1 for _ in media.list_objects("")) == OBJECTS  # and it reads the source


def test_the_daily_backup_job_snapshots_the_buckets_with_the_databases(setup, instance):
    config, store, _ = setup
    job = definitions_for(config).resolve_job_def("daily_backup")
    result = job.execute_in_process(partition_key=today(), instance=instance, raise_on_error=False)
    assert result.success, failure_messages(result)
    manifest = read_snapshot(store, "media", today())
    assert manifest is not None and len(manifest.entries) == OBJECTS
    materialized = {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    assert {"s3/media/snapshot", "s3/media/verification", "postgres/agentic/verification"} <= (
        materialized
    )
