"""Where backups live: a local folder or S3 buckets behind one interface (base.py), built from
the configuration here. Commands (core/) only ever see `ObjectStore`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backup_pipelines.core.config import BackupConfig, expand_env
from backup_pipelines.storage.base import (
    ObjectStore,
    ObjectWriter,
    StorageError,
    StoredObject,
    writing,
)
from backup_pipelines.storage.local import LocalStore
from backup_pipelines.storage.s3 import SINGLE_COPY_LIMIT, S3Store, aws_client

__all__ = [
    "BackupStores",
    "LocalStore",
    "ObjectStore",
    "ObjectWriter",
    "S3Store",
    "StorageError",
    "StoredObject",
    "aws_client",
    "source_bucket_store",
    "stores_from_config",
    "writing",
]


@dataclass(frozen=True)
class BackupStores:
    """The hot copies (dumps) and the archive copies; both may be the same bucket."""

    dumps: ObjectStore
    archive: ObjectStore
    refs: ObjectStore
    snapshots: S3Store | None = None  # bucket snapshots (S3 storage only)


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
        client = aws_client(
            "s3",
            endpoint or backup_store.client.meta.endpoint_url,
            source.region,
            access_key_id=expand_env(source.access_key_id, f"{key}.access_key_id")
            if source.access_key_id
            else None,
            secret_access_key=expand_env(source.secret_access_key or "", f"{key}.secret_access_key")
            or None,
        )
    return S3Store(client, expand_env(source.bucket, f"{key}.bucket"), source.prefix)
