"""The stores against a real S3 endpoint and a real folder."""

import hashlib
import os

import boto3
import pytest

from backup_pipelines.storage import S3Store, aws_client, writing
from backup_pipelines.storage.digest import digest_chunks
from backup_pipelines.storage.parts import MIB


@pytest.fixture
def s3_store(s3_endpoint, bucket) -> S3Store:
    return S3Store(
        aws_client("s3", s3_endpoint, "us-east-1"), bucket, "prefix", single_copy_limit=6 * MIB
    )


def test_multipart_upload_round_trips(s3_store):
    data = os.urandom(20 * MIB + 123)
    writer = s3_store.open_writer("big.bin")
    with writing(writer):
        for start in range(0, len(data), MIB):
            writer.write(data[start : start + MIB])
        digest = writer.commit()
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert s3_store.size("big.bin") == len(data)
    assert digest_chunks(s3_store.read_chunks("big.bin")).sha256 == digest.sha256


def test_failed_upload_is_aborted_and_leaves_nothing(s3_store, s3_endpoint, bucket):
    writer = s3_store.open_writer("partial.bin")
    with pytest.raises(RuntimeError), writing(writer):
        writer.write(os.urandom(17 * MIB))  # two parts already sent
        raise RuntimeError("pg_dump died")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not s3_store.exists("partial.bin")


def test_multipart_copy_above_the_single_copy_limit(s3_store):
    data = os.urandom(13 * MIB)
    s3_store.write_bytes("source.bin", data)
    archive = S3Store(
        s3_store.client,
        s3_store.bucket,
        "archive",
        storage_class="STANDARD_IA",
        single_copy_limit=6 * MIB,
    )
    archive.copy_from(s3_store, "source.bin", "copy.bin")
    assert digest_chunks(archive.read_chunks("copy.bin")).sha256 == hashlib.sha256(data).hexdigest()
    assert archive.storage_class("copy.bin") == "STANDARD_IA"
