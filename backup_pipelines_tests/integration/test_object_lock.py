"""S3 Object Lock on archive copies, with the retain-until date from the retention policy."""

import datetime as dt
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines_tests.support.config import today
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    materialization,
    run_backup,
)


def locked_bucket(s3_endpoint: str) -> str:
    name = f"locked-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(
        Bucket=name, ObjectLockEnabledForBucket=True
    )
    return name


def governance_locked(bucket: str, s3_endpoint: str) -> dict:
    lock = {"mode": "GOVERNANCE"}
    return {"s3": {"bucket": bucket, "endpoint_url": s3_endpoint, "object_lock": lock}}


def midnight_in(days: int) -> dt.datetime:
    start = dt.datetime.combine(dt.date.fromisoformat(today()), dt.time(), dt.UTC)
    return start + dt.timedelta(days=days)


def test_archive_copies_are_locked_until_the_policy_lets_them_go(
    write_config, s3_endpoint, instance
):
    bucket = locked_bucket(s3_endpoint)
    config = write_config(
        storage=governance_locked(bucket, s3_endpoint),
        retention={"daily": 3},
    )
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    archived = materialization(result, "agentic", names.ARCHIVE)
    until = midnight_in(3)
    assert archived.metadata["object_lock_retain_until"].value == until.isoformat()

    archive = stores_from_config(load_config(config)).archive
    keys = list(archive.list_keys(f"agentic/{today()}/"))
    assert len(keys) == 2  # the dump copy and its manifest, both locked
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=archive.full_key(key))
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] == until
        assert archive.locked_until(key) == until  # what retention consults before deleting
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=bucket, Key=archive.full_key(key), VersionId=head["VersionId"])
    dumps = stores_from_config(load_config(config)).dumps
    dump_key = next(k for k in dumps.list_keys(f"agentic/{today()}/") if ".dump" in k)
    assert "ObjectLockMode" not in s3.head_object(Bucket=bucket, Key=dumps.full_key(dump_key))


def test_retain_until_follows_the_policy_or_the_configured_days(write_config, s3_endpoint):
    storage = {"s3": {"bucket": "any-bucket", "object_lock": {"mode": "COMPLIANCE"}}}
    config = load_config(
        write_config(
            storage=storage,
            retention={"daily": 7},
            databases={
                "agentic": {"url": "postgresql://x@h/agentic", "retention": {"daily": 14}},
                "langfuse": {"url": "postgresql://x@h/langfuse"},
            },
        )
    )
    assert config.archive_retain_until("agentic", "2026-11-23") == dt.datetime(
        2026, 12, 7, tzinfo=dt.UTC
    )
    assert config.archive_retain_until("langfuse", "2026-11-23") == dt.datetime(
        2026, 11, 30, tzinfo=dt.UTC
    )
    storage["s3"]["object_lock"]["days"] = 400
    config = load_config(write_config(storage=storage))
    assert config.archive_retain_until("agentic", "2026-11-23") == dt.datetime(
        2027, 12, 28, tzinfo=dt.UTC
    )


def test_a_bucket_without_object_lock_is_named_and_nothing_is_archived(
    write_config, s3_endpoint, bucket, instance
):
    config = write_config(storage=governance_locked(bucket, s3_endpoint))
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert not result.success
    assert (
        f"storage.s3.object_lock is set but bucket {bucket} does not have Object Lock enabled"
        in failure_messages(result)
    )
    archive = stores_from_config(load_config(config)).archive
    assert list(archive.list_keys("agentic/")) == []
