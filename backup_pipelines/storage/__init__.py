"""Where backups live: a local folder, S3 buckets, Azure containers or GCS buckets behind one
interface (base.py). Commands (core/) only ever see `ObjectStore`; core/common/stores.py builds the
stores a configuration names. Nothing here imports core/."""

from __future__ import annotations

from backup_pipelines.storage.azure import AzureStore, azure_service
from backup_pipelines.storage.base import (
    ObjectStore,
    ObjectWriter,
    StorageError,
    StoredObject,
    writing,
)
from backup_pipelines.storage.gcs import GcsStore, gcs_client
from backup_pipelines.storage.local import LocalStore
from backup_pipelines.storage.s3 import S3Store, aws_client

__all__ = [
    "AzureStore",
    "GcsStore",
    "LocalStore",
    "ObjectStore",
    "ObjectWriter",
    "S3Store",
    "StorageError",
    "StoredObject",
    "aws_client",
    "azure_service",
    "gcs_client",
    "writing",
]
