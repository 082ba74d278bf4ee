"""The stores a configuration names: the dumps, the archive copies, the refs and the bucket
snapshots, built from `storage:`; the replica (the second copy of every archive) from
`replica:`; a snapshotted bucket from `buckets:`. Storage itself (storage/) knows nothing of
the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backup_pipelines.core.common.config import (
    AzureStorageConfig,
    BackupConfig,
    GcsStorageConfig,
    RemoteStorageConfig,
    S3StorageConfig,
    StorageConfig,
    expand_env,
)
from backup_pipelines.storage import LocalStore, ObjectStore
from backup_pipelines.storage.parts import SINGLE_COPY_LIMIT

if TYPE_CHECKING:
    from backup_pipelines.storage import S3Store


@dataclass(frozen=True)
class BackupStores:
    """The hot copies (dumps) and the archive copies; both may be the same bucket."""

    dumps: ObjectStore
    archive: ObjectStore
    refs: ObjectStore
    snapshots: S3Store | None = None  # bucket snapshots (S3 storage only)
    # The replica store, where a retention run needs it (never built for the primary chain:
    # a backup neither waits for nor fails with the replica).
    replica: ObjectStore | None = None


def stores_from_config(
    config: BackupConfig, *, single_copy_limit: int = SINGLE_COPY_LIMIT
) -> BackupStores:
    return _stores_of(config, config.storage, single_copy_limit)


def replica_store(config: BackupConfig) -> ObjectStore:
    """Where the second copy of every archive lives (laid out as the archive store is); built
    from `replica:` alone, so it needs none of the primary store's credentials."""
    if config.replica is None:
        raise ValueError("replica: is not configured")
    return _stores_of(config, config.replica, SINGLE_COPY_LIMIT).archive


def _stores_of(
    config: BackupConfig, storage: StorageConfig, single_copy_limit: int
) -> BackupStores:
    section = storage.SECTION
    if storage.local is not None:
        local = storage.local
        root = config.local_path(local.path, f"{section}.local.path")
        archive_root = (
            config.local_path(local.archive_path, f"{section}.local.archive_path")
            if local.archive_path
            else root
        )
        return BackupStores(
            dumps=LocalStore(root / "dumps"),
            archive=LocalStore(archive_root / "archive"),
            refs=LocalStore(root / "refs"),
        )
    if storage.azure is not None:
        return _azure_stores(storage.azure, section)
    if storage.gcs is not None:
        return _gcs_stores(storage.gcs, section)
    assert storage.s3 is not None
    return _s3_stores(storage.s3, section, single_copy_limit)


@dataclass(frozen=True)
class _Layout:
    """The prefixes of a bucket or container: dumps/, refs/, buckets/ under the configured
    prefix; archive/ there too unless the archive has its own prefix."""

    prefix: str
    archive_prefix: str | None

    def under(self, name: str) -> str:
        return "/".join(filter(None, [self.prefix, name]))

    @property
    def archive(self) -> str:
        return self.archive_prefix if self.archive_prefix is not None else self.under("archive")

    @classmethod
    def of(cls, settings: RemoteStorageConfig, at: str) -> _Layout:
        return cls(expand_env(settings.prefix, f"{at}.prefix"), settings.archive_prefix)


def _s3_stores(s3: S3StorageConfig, section: str, single_copy_limit: int) -> BackupStores:
    # Each cloud SDK is imported by the configuration that names it (about a second each).
    from backup_pipelines.storage.s3 import S3Store, aws_client

    at = f"{section}.s3"

    def expanded(name: str) -> str | None:
        value = getattr(s3, name)
        return expand_env(value, f"{at}.{name}") if value else None

    client = aws_client(
        "s3",
        expanded("endpoint_url"),
        s3.region,
        access_key_id=expanded("access_key_id"),
        secret_access_key=expanded("secret_access_key"),
    )
    bucket = expand_env(s3.bucket, f"{at}.bucket")
    layout = _Layout.of(s3, at)
    common: dict[str, Any] = {
        "sse": s3.sse,
        "kms_key_id": s3.kms_key_id,
        "max_parts": s3.max_parts,
        "single_copy_limit": single_copy_limit,
    }
    return BackupStores(
        dumps=S3Store(client, bucket, layout.under("dumps"), **common),
        archive=S3Store(
            client,
            s3.archive_bucket or bucket,
            layout.archive,
            storage_class=s3.archive_storage_class,
            lock_mode=s3.object_lock.mode if s3.object_lock else None,
            **common,
        ),
        refs=S3Store(client, bucket, layout.under("refs"), **common),
        snapshots=S3Store(client, bucket, layout.under("buckets"), **common),
    )


def _azure_stores(azure: AzureStorageConfig, section: str) -> BackupStores:
    from backup_pipelines.storage.azure import AzureStore, azure_service

    at = f"{section}.azure"

    def expanded(name: str) -> str | None:
        value = getattr(azure, name)
        return expand_env(value, f"{at}.{name}") if value else None

    service = azure_service(
        expanded("account_url"), expanded("connection_string"), expanded("sas_token")
    )
    layout = _Layout.of(azure, at)
    archive_container = azure.archive_container or azure.container
    archive_setting = f"{at}." + ("archive_container" if azure.archive_container else "container")
    return BackupStores(
        dumps=AzureStore(service, azure.container, layout.under("dumps")),
        archive=AzureStore(
            service,
            archive_container,
            layout.archive,
            tier=azure.archive_tier,
            setting=archive_setting,
        ),
        refs=AzureStore(service, azure.container, layout.under("refs")),
    )


def _gcs_stores(gcs: GcsStorageConfig, section: str) -> BackupStores:
    from backup_pipelines.storage.gcs import GcsStore, gcs_client

    at = f"{section}.gcs"
    credentials = (
        expand_env(gcs.credentials_file, f"{at}.credentials_file") if gcs.credentials_file else None
    )
    client = gcs_client(gcs.project, credentials)
    layout = _Layout.of(gcs, at)
    archive_setting = f"{at}." + ("archive_bucket" if gcs.archive_bucket else "bucket")
    return BackupStores(
        dumps=GcsStore(client, gcs.bucket, layout.under("dumps")),
        archive=GcsStore(
            client,
            gcs.archive_bucket or gcs.bucket,
            layout.archive,
            storage_class=gcs.archive_storage_class,
            setting=archive_setting,
        ),
        refs=GcsStore(client, gcs.bucket, layout.under("refs")),
    )


def source_bucket_store(config: BackupConfig, name: str, backup_store: S3Store) -> S3Store:
    """The bucket to snapshot; it shares the backup store's client (and so copies
    server-side) unless it needs another endpoint or other credentials."""
    from backup_pipelines.storage.s3 import S3Store, aws_client

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
