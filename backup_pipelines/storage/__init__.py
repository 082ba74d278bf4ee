"""Where backups live: a local folder, S3 buckets, Azure containers or GCS buckets behind one
interface (base.py). Commands (core/) only ever see `ObjectStore`; core/common/stores.py builds the
stores a configuration names. Nothing here imports core/."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from backup_pipelines.storage.base import (
    ObjectStore,
    ObjectWriter,
    StorageError,
    StoredObject,
    writing,
)
from backup_pipelines.storage.local import LocalStore

if TYPE_CHECKING:
    from backup_pipelines.storage.azure import AzureStore, azure_service
    from backup_pipelines.storage.gcs import GcsStore, gcs_client
    from backup_pipelines.storage.s3 import S3Store, aws_client

# The cloud SDKs take about a second to import: a process that uses none of them (an export
# into a local store, the CLI) imports its backend's module on first use of one of its names.
_CLOUD_MODULES = {
    "AzureStore": "azure",
    "azure_service": "azure",
    "GcsStore": "gcs",
    "gcs_client": "gcs",
    "S3Store": "s3",
    "aws_client": "s3",
}


def __getattr__(name: str) -> Any:
    if name not in _CLOUD_MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_CLOUD_MODULES[name]}"), name)


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
