"""An S3 bucket (or prefix) as a store: multipart uploads completed only when whole,
server-side copies, Object Lock; and the one way this project builds AWS clients."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import shlex
from collections.abc import Iterator
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backup_pipelines.storage.base import ObjectStore, ObjectWriter, StorageError, StoredObject
from backup_pipelines.storage.digest import CHUNK_SIZE
from backup_pipelines.storage.parts import MIB, SINGLE_COPY_LIMIT, PartedWriter, part_size_for


def describe_s3_error(error: Exception, bucket: str, key: str | None = None) -> str:
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(error, NoCredentialsError):
        return (
            f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or an instance role"
        )
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket" or (code == "404" and not key):
            return (
                f"S3 bucket {bucket!r} does not exist: create it or fix the bucket name "
                "(bucket or archive_bucket of storage.s3, or of replica.s3)"
            )
        if code in (
            "AccessDenied",
            "403",
            "AllAccessDisabled",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            return f"no permission for {where} ({code}): check the bucket policy and credentials"
        return f"S3 error on {where}: {code}: {error.response.get('Error', {}).get('Message', '')}"
    return f"S3 error on {where}: {type(error).__name__}: {error}"


class _S3Writer(PartedWriter):
    """A multipart upload, completed only when whole."""

    def __init__(self, store: S3Store, key: str, expected_size: int) -> None:
        self._store = store
        self._key = store.full_key(key)
        super().__init__(
            f"s3://{store.bucket}/{self._key}", expected_size, max_parts=store.max_parts
        )
        self._upload_id = ""

    def _begin(self) -> None:
        response = self._store.call(
            "create_multipart_upload", self._key, Key=self._key, **self._store.put_args
        )
        self._upload_id = response["UploadId"]

    def _upload_part(self, number: int, body: bytes, total: int | None) -> dict[str, Any]:
        response = self._store.call(
            "upload_part",
            self._key,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _complete(self, parts: list[Any]) -> None:
        self._store.call(
            "complete_multipart_upload",
            self._key,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )

    def _put_whole(self, body: bytes) -> None:
        self._store.call("put_object", self._key, Key=self._key, Body=body, **self._store.put_args)

    def _abort_upload(self) -> None:
        with contextlib.suppress(ClientError, BotoCoreError, StorageError):
            self._store.call(
                "abort_multipart_upload", self._key, Key=self._key, UploadId=self._upload_id
            )


class S3Store(ObjectStore):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        storage_class: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        max_parts: int = 10_000,
        single_copy_limit: int = SINGLE_COPY_LIMIT,
        lock_mode: str | None = None,
    ) -> None:
        self.client = client
        self.lock_mode = lock_mode
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_parts = max_parts
        self.single_copy_limit = single_copy_limit
        self.put_args: dict[str, str] = {}
        if storage_class:
            self.put_args["StorageClass"] = storage_class
        if sse:
            self.put_args["ServerSideEncryption"] = sse
        if kms_key_id:
            self.put_args["SSEKMSKeyId"] = kms_key_id

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def download_command(self, key: str, destination: str) -> str:
        endpoint, region = self.client.meta.endpoint_url, self.client.meta.region_name
        on_aws = "amazonaws.com" in endpoint
        where = f"--region {region}" if on_aws else f"--endpoint-url {endpoint}"
        return f"aws s3 cp {where} {shlex.quote(self.uri(key))} {shlex.quote(destination)}"

    def call(self, operation: str, key: str | None, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(describe_s3_error(error, self.bucket, key)) from None

    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter:
        return _S3Writer(self, key, expected_size)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        full_key = self.full_key(key)
        body = self.call("get_object", full_key, Key=full_key)["Body"]
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(describe_s3_error(error, self.bucket, full_key)) from None
        finally:
            body.close()

    def size(self, key: str) -> int | None:
        head = self.head(key)
        return None if head is None else head.size

    def head(self, key: str) -> StoredObject | None:
        """Size and ETag of `key`, or None when there is no such object."""
        full_key = self.full_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full_key)
            return StoredObject(key, head["ContentLength"], head["ETag"].strip('"'))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(describe_s3_error(error, self.bucket, full_key)) from None
        except BotoCoreError as error:
            raise StorageError(describe_s3_error(error, self.bucket, full_key)) from None

    def storage_class(self, key: str) -> str | None:
        full_key = self.full_key(key)
        head = self.call("head_object", full_key, Key=full_key)
        return head.get("StorageClass", "STANDARD")

    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        if not isinstance(source, S3Store) or source.client is not self.client:
            self.copy_streamed(source, source_key, key)
            return
        size = source.size(source_key) or 0
        config = TransferConfig(
            multipart_threshold=self.single_copy_limit,
            multipart_chunksize=max(part_size_for(size, self.max_parts), 64 * MIB)
            if size > self.single_copy_limit
            else self.single_copy_limit,
            max_concurrency=4,
        )
        target = self.full_key(key)
        try:
            self.client.copy(
                {"Bucket": source.bucket, "Key": source.full_key(source_key)},
                self.bucket,
                target,
                ExtraArgs={"MetadataDirective": "COPY", **self.put_args},
                Config=config,
            )
        except (ClientError, BotoCoreError) as error:
            raise StorageError(describe_s3_error(error, self.bucket, target)) from None

    def delete(self, key: str) -> None:
        full_key = self.full_key(key)
        self.call("delete_object", full_key, Key=full_key)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        full_prefix = self.full_key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"][strip:], item["Size"], item["ETag"].strip('"'))
        except (ClientError, BotoCoreError) as error:
            raise StorageError(describe_s3_error(error, self.bucket, full_prefix)) from None

    @functools.cached_property
    def object_lock_enabled(self) -> bool:
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as error:
            if "ObjectLockConfigurationNotFound" in error.response.get("Error", {}).get("Code", ""):
                return False
            raise StorageError(describe_s3_error(error, self.bucket)) from None
        return config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def require_object_lock(self) -> None:
        if not self.object_lock_enabled:
            raise StorageError(
                f"storage.s3.object_lock is set but bucket {self.bucket} does not have Object "
                "Lock enabled; create the archive bucket with it (aws s3api create-bucket "
                "--object-lock-enabled-for-bucket ...) or remove object_lock"
            )

    def retain(self, key: str, until: dt.datetime) -> None:
        """Put `key` under Object Lock (this store's mode) until `until`."""
        self.require_object_lock()
        full_key = self.full_key(key)
        retention = {"Mode": self.lock_mode or "GOVERNANCE", "RetainUntilDate": until}
        self.call("put_object_retention", full_key, Key=full_key, Retention=retention)

    def locked_until(self, key: str) -> dt.datetime | None:
        if not self.object_lock_enabled:  # one request per bucket instead of one per object
            return None
        head = self.call("head_object", key, Key=self.full_key(key))
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return dt.datetime.max.replace(tzinfo=dt.UTC)
        until = head.get("ObjectLockRetainUntilDate")
        return until if until and until > dt.datetime.now(dt.UTC) else None


def aws_client(
    service: str,
    endpoint_url: str | None,
    region: str | None,
    *,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Any:
    """Every AWS client of this project: standard retries (5 attempts) and timeouts, so a
    throttled or flaky endpoint is retried and a dead one fails instead of hanging."""
    settings = BotoConfig(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=settings,
    )
