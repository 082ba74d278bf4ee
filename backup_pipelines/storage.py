"""Where backups live: a local folder or an S3 bucket, behind one small interface.

Writes are atomic: a streamed object becomes visible only when complete (a renamed temp file,
or a completed multipart upload); a failed write leaves nothing that could pass for a backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import shlex
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backup_pipelines.config import BackupConfig, expand_env
from backup_pipelines.streams import CHUNK_SIZE, HashingCounter, StreamDigest

MIB = 1 << 20
MIN_PART_SIZE = 8 * MIB
MAX_PART_SIZE = 512 * MIB
# Above this, S3 refuses a single CopyObject; a multipart copy is used instead.
SINGLE_COPY_LIMIT = 5 * 1024 * MIB
_PARTS_IN_FLIGHT = 2


class StorageError(RuntimeError):
    """Storage refused or failed an operation; the message names the location and the fix."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str | None = None  # S3 only: the object's ETag, without quotes


class ObjectWriter(ABC):
    """Streams one object; `commit` makes it visible, leaving the block any other way aborts."""

    def __init__(self) -> None:
        self._counter = HashingCounter()

    def write(self, chunk: bytes) -> None:
        self._counter.update(chunk)
        self._write(chunk)

    def commit(self) -> StreamDigest:
        self._commit()
        return self._counter.digest()

    @abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class ObjectStore(ABC):
    """One place to keep objects: a folder, or a bucket and prefix."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter: ...

    @abstractmethod
    def read_chunks(self, key: str) -> Iterator[bytes]: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The stored size in bytes, or None when there is no such object."""

    @abstractmethod
    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        """Copy an object of `source` here, server-side where the store allows."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under `prefix` with its size, page by page (never all in memory)."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        return (stored.key for stored in self.list_objects(prefix))

    def locked_until(self, key: str) -> dt.datetime | None:
        """Until when an object lock forbids deleting `key` (None: it may be deleted)."""
        return None

    def require_object_lock(self) -> None:
        """Raise unless `retain` can lock objects here."""
        raise StorageError(f"{self.uri('')}: object lock needs S3 storage with Object Lock")

    def retain(self, key: str, until: dt.datetime) -> None:
        """Forbid deleting `key` before `until` (S3 Object Lock)."""
        self.require_object_lock()

    @abstractmethod
    def download_command(self, key: str, destination: str) -> str:
        """The shell command that fetches an object without this service (for the runbook)."""

    def write_chunks(
        self, key: str, chunks: Iterable[bytes], *, expected_size: int = 0
    ) -> StreamDigest:
        """Stream `chunks` into one object, atomically; nothing is left if this fails."""
        writer = self.open_writer(key, expected_size=expected_size)
        with writing(writer):
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def write_bytes(self, key: str, data: bytes) -> StreamDigest:
        return self.write_chunks(key, [data], expected_size=len(data))

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read_chunks(key))

    def exists(self, key: str) -> bool:
        return self.size(key) is not None


@contextlib.contextmanager
def writing(writer: ObjectWriter) -> Iterator[ObjectWriter]:
    """Abort the writer if the block raises (or is cancelled)."""
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise


# --- local folder ----------------------------------------------------------------------------


class _LocalWriter(ObjectWriter):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self._temp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._temp.open("wb")

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._temp.replace(self._path)

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)

    def fill_from_file(self, source: Path) -> None:
        """Take the whole content from a local file via the kernel's copy (no bytes in Python)."""
        self._file.close()
        shutil.copyfile(source, self._temp)
        self._file = self._temp.open("ab")


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"object key {key!r} escapes the storage folder {self.root}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def download_command(self, key: str, destination: str) -> str:
        return f"cp {shlex.quote(str(self._path(key)))} {shlex.quote(destination)}"

    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter:
        try:
            return _LocalWriter(self._path(key))
        except OSError as error:
            raise StorageError(f"cannot write {self._path(key)}: {error.strerror}") from None

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)} does not exist") from None
        with handle:
            yield from iter(lambda: handle.read(CHUNK_SIZE), b"")

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        if not isinstance(source, LocalStore):
            self.write_chunks(key, source.read_chunks(source_key))
            return
        if not source.exists(source_key):
            raise StorageError(f"{source.uri(source_key)} does not exist")
        writer = self.open_writer(key)
        assert isinstance(writer, _LocalWriter)
        with writing(writer):
            writer.fill_from_file(source._path(source_key))
            writer.commit()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the day's folder, once it is empty
            path.parent.rmdir()

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root.resolve()
        start = self._path(prefix) if prefix else base
        if start.is_file():
            yield StoredObject(prefix, start.stat().st_size)
            return
        for path in sorted(start.rglob("*")) if start.is_dir() else []:
            if path.is_file() and ".partial-" not in path.name:
                yield StoredObject(path.relative_to(base).as_posix(), path.stat().st_size)


# --- S3 ---------------------------------------------------------------------------------------


def part_size_for(expected_size: int, max_parts: int) -> int:
    """A part size that fits `expected_size` (with room to grow 4x) into `max_parts` parts."""
    needed = math.ceil(4 * max(expected_size, 1) / max_parts)
    return min(MAX_PART_SIZE, max(MIN_PART_SIZE, math.ceil(needed / MIB) * MIB))


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
                f"S3 bucket {bucket!r} does not exist (storage.s3.bucket or archive_bucket): "
                "create it or fix the name"
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


class _S3Writer(ObjectWriter):
    """A multipart upload with a bounded number of parts in flight (bounded memory)."""

    def __init__(self, store: S3Store, key: str, expected_size: int) -> None:
        super().__init__()
        self._store = store
        self._key = store.full_key(key)
        self._part_size = part_size_for(expected_size, store.max_parts)
        self._buffer = bytearray()
        self._parts: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(_PARTS_IN_FLIGHT)
        self._pool = ThreadPoolExecutor(_PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        self._upload_id: str | None = None

    def _start(self) -> str:
        if self._upload_id is None:
            response = self._store.call(
                "create_multipart_upload", self._key, Key=self._key, **self._store.put_args
            )
            self._upload_id = response["UploadId"]
        return self._upload_id

    def _write(self, chunk: bytes) -> None:
        self._buffer += chunk
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            self._send_part(part)

    def _send_part(self, body: bytes) -> None:
        upload_id = self._start()
        number = len(self._parts) + 1
        if number > self._store.max_parts:
            raise StorageError(
                f"s3://{self._store.bucket}/{self._key} needs more than "
                f"{self._store.max_parts} parts; the database grew far beyond its estimate"
            )
        self._slots.acquire()
        future = self._pool.submit(self._upload_part, upload_id, number, body)
        future.add_done_callback(lambda _: self._slots.release())
        self._parts.append(future)

    def _upload_part(self, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        response = self._store.call(
            "upload_part",
            self._key,
            Key=self._key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _commit(self) -> None:
        if self._upload_id is None:
            self._store.call(
                "put_object",
                self._key,
                Key=self._key,
                Body=bytes(self._buffer),
                **self._store.put_args,
            )
            self._pool.shutdown()
            return
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer.clear()
        try:
            parts = [future.result() for future in self._parts]
            self._store.call(
                "complete_multipart_upload",
                self._key,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown()

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffer.clear()
        if self._upload_id is not None:
            with contextlib.suppress(ClientError, BotoCoreError, StorageError):
                self._store.call(
                    "abort_multipart_upload", self._key, Key=self._key, UploadId=self._upload_id
                )
            self._upload_id = None


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

    def storage_class(self, key: str) -> str:
        full_key = self.full_key(key)
        head = self.call("head_object", full_key, Key=full_key)
        return head.get("StorageClass", "STANDARD")

    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        if not isinstance(source, S3Store) or source.client is not self.client:
            self.write_chunks(
                key, source.read_chunks(source_key), expected_size=source.size(source_key) or 0
            )
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


# --- from configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class BackupStores:
    """The hot copies (dumps) and the archive copies; both may be the same bucket."""

    dumps: ObjectStore
    archive: ObjectStore
    refs: ObjectStore
    snapshots: S3Store | None = None  # bucket snapshots (S3 storage only)


def aws_client(service: str, endpoint_url: str | None, region: str | None) -> Any:
    retries = BotoConfig(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region, config=retries)


def stores_from_config(
    config: BackupConfig, *, single_copy_limit: int = SINGLE_COPY_LIMIT
) -> BackupStores:
    if config.storage.local is not None:
        local = config.storage.local
        root = config.local_path(local.path)
        archive_root = config.local_path(local.archive_path) if local.archive_path else root
        return BackupStores(
            dumps=LocalStore(root / "dumps"),
            archive=LocalStore(archive_root / "archive"),
            refs=LocalStore(root / "refs"),
        )
    s3 = config.storage.s3
    assert s3 is not None
    endpoint = expand_env(s3.endpoint_url, "storage.s3.endpoint_url") if s3.endpoint_url else None
    client = aws_client("s3", endpoint, s3.region)
    bucket = expand_env(s3.bucket, "storage.s3.bucket")
    prefix = expand_env(s3.prefix, "storage.s3.prefix")

    def under_prefix(name: str) -> str:
        return "/".join(filter(None, [prefix, name]))

    archive_prefix = s3.archive_prefix if s3.archive_prefix is not None else under_prefix("archive")
    common: dict[str, Any] = {
        "sse": s3.sse,
        "kms_key_id": s3.kms_key_id,
        "max_parts": s3.max_parts,
        "single_copy_limit": single_copy_limit,
    }
    return BackupStores(
        dumps=S3Store(client, bucket, under_prefix("dumps"), **common),
        archive=S3Store(
            client,
            s3.archive_bucket or bucket,
            archive_prefix,
            storage_class=s3.archive_storage_class,
            lock_mode=s3.object_lock.mode if s3.object_lock else None,
            **common,
        ),
        refs=S3Store(client, bucket, under_prefix("refs"), **common),
        snapshots=S3Store(client, bucket, under_prefix("buckets"), **common),
    )


def source_bucket_store(config: BackupConfig, name: str, backup_store: S3Store) -> S3Store:
    """The bucket to snapshot; it shares the backup store's client (and so copies
    server-side) unless it needs another endpoint or other credentials."""
    source = config.buckets[name]
    key = f"buckets.{name}"
    endpoint = (
        expand_env(source.endpoint_url, f"{key}.endpoint_url") if source.endpoint_url else None
    )
    same_endpoint = endpoint in (None, backup_store.client.meta.endpoint_url)
    if same_endpoint and not source.access_key_id:
        client = backup_store.client
    else:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint or backup_store.client.meta.endpoint_url,
            region_name=source.region,
            aws_access_key_id=expand_env(source.access_key_id, f"{key}.access_key_id")
            if source.access_key_id
            else None,
            aws_secret_access_key=expand_env(
                source.secret_access_key or "", f"{key}.secret_access_key"
            )
            or None,
        )
    return S3Store(client, expand_env(source.bucket, f"{key}.bucket"), source.prefix)
