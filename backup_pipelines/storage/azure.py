"""An Azure Blob Storage container (or prefix) as a store: block blobs staged block by block and
visible only when the block list is committed, server-side copies with an access tier."""

from __future__ import annotations

import base64
import contextlib
import shlex
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, StandardBlobTier

from backup_pipelines.storage.base import ObjectStore, ObjectWriter, StorageError, StoredObject
from backup_pipelines.storage.parts import PartedWriter

# Azure's limit on the blocks of one blob.
MAX_BLOCKS = 50_000
_COPY_POLL_SECONDS = 1.0
_DENIED = {
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "InsufficientAccountPermissions",
}


def describe_azure_error(error: Exception, where: str, setting: str) -> str:
    """What went wrong, from the error's code only: Azure's messages may quote the request."""
    code = getattr(error, "error_code", None) or ""
    if code == "ContainerNotFound":
        return f"Azure container of {where} does not exist ({setting}): create it or fix the name"
    if isinstance(error, ClientAuthenticationError) or code in _DENIED:
        return (
            f"no permission for {where} ({code or 'authentication failed'}): check the "
            "connection string or SAS token, or the identity's role on the container"
        )
    status = getattr(error, "status_code", None)
    if isinstance(error, HttpResponseError):
        return f"Azure error on {where}: HTTP {status} {code}"
    return f"Azure error on {where}: {type(error).__name__}"


def _block_id(number: int) -> str:
    return base64.b64encode(f"{number:08d}".encode()).decode()


class _AzureWriter(PartedWriter):
    """Staged blocks, committed as one block list; uncommitted blocks are never listed and
    Azure discards them after a week."""

    def __init__(self, store: AzureStore, key: str, expected_size: int) -> None:
        self._store = store
        self._blob = store.container.get_blob_client(store.full_key(key))
        super().__init__(store.uri(key), expected_size, max_parts=MAX_BLOCKS)

    def _begin(self) -> None:
        pass  # staging the first block starts the upload

    def _upload_part(self, number: int, body: bytes, total: int | None) -> str:
        block = _block_id(number)
        self._store.call(self._blob.stage_block, self._where, block, body, length=len(body))
        return block

    def _complete(self, parts: list[Any]) -> None:
        self._store.call(
            self._blob.commit_block_list, self._where, parts, standard_blob_tier=self._store.tier
        )

    def _put_whole(self, body: bytes) -> None:
        self._store.call(
            self._blob.upload_blob,
            self._where,
            body,
            overwrite=True,
            standard_blob_tier=self._store.tier,
        )

    def _abort_upload(self) -> None:
        pass  # nothing was committed; the staged blocks expire unseen


class AzureStore(ObjectStore):
    def __init__(
        self,
        service: BlobServiceClient,
        container: str,
        prefix: str = "",
        *,
        tier: str | None = None,
        setting: str = "storage.azure.container",
    ) -> None:
        self.service = service
        self.container: ContainerClient = service.get_container_client(container)
        self.container_name = container
        self.prefix = prefix.strip("/")
        self.tier = StandardBlobTier(tier) if tier else None
        self.setting = setting
        # The URL without its query: a SAS token is a secret.
        parts = urlsplit(service.url)
        self.endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"{self.endpoint}/{self.container_name}/{self.full_key(key)}"

    def call(self, operation: Any, where: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, **kwargs)
        except AzureError as error:
            raise self.error(error, where) from None

    def call_unless_missing(self, operation: Any, where: str, *args: Any, **kwargs: Any) -> Any:
        """`call`, or None when the blob does not exist (a missing container is still an
        error)."""
        try:
            return operation(*args, **kwargs)
        except ResourceNotFoundError as error:
            if error.error_code == "ContainerNotFound":
                raise self.error(error, where) from None
            return None
        except AzureError as error:
            raise self.error(error, where) from None

    def error(self, error: Exception, where: str) -> StorageError:
        return StorageError(describe_azure_error(error, where, self.setting))

    def download_command(self, key: str, destination: str) -> str:
        return (
            f"az storage blob download --blob-endpoint {shlex.quote(self.endpoint)} "
            f"--container-name {shlex.quote(self.container_name)} "
            f"--name {shlex.quote(self.full_key(key))} --file {shlex.quote(destination)}"
        )

    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter:
        return _AzureWriter(self, key, expected_size)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        blob = self.container.get_blob_client(self.full_key(key))
        where = self.uri(key)
        downloader = self.call(blob.download_blob, where, max_concurrency=1)
        try:
            yield from downloader.chunks()
        except AzureError as error:
            raise self.error(error, where) from None

    def _properties(self, key: str) -> Any:
        blob = self.container.get_blob_client(self.full_key(key))
        return self.call_unless_missing(blob.get_blob_properties, self.uri(key))

    def size(self, key: str) -> int | None:
        properties = self._properties(key)
        return None if properties is None else properties.size

    def storage_class(self, key: str) -> str | None:
        properties = self._properties(key)
        return None if properties is None else properties.blob_tier

    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        if not isinstance(source, AzureStore) or source.endpoint != self.endpoint:
            self.copy_streamed(source, source_key, key)
            return
        source_blob = source.container.get_blob_client(source.full_key(source_key))
        target = self.container.get_blob_client(self.full_key(key))
        where = self.uri(key)
        copy = self.call(
            target.start_copy_from_url, where, source_blob.url, standard_blob_tier=self.tier
        )
        status = copy["copy_status"]
        while status == "pending":
            time.sleep(_COPY_POLL_SECONDS)
            status = self.call(target.get_blob_properties, where).copy.status
        if status != "success":
            with contextlib.suppress(StorageError):
                self.delete(key)
            raise StorageError(f"Azure copy of {source.uri(source_key)} to {where}: {status}")

    def delete(self, key: str) -> None:
        blob = self.container.get_blob_client(self.full_key(key))
        self.call_unless_missing(blob.delete_blob, self.uri(key), delete_snapshots="include")

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        full_prefix = self.full_key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for blob in self.container.list_blobs(name_starts_with=full_prefix):
                yield StoredObject(blob.name[strip:], blob.size, blob.etag.strip('"'))
        except AzureError as error:
            raise self.error(error, self.uri(prefix)) from None


def azure_service(
    account_url: str | None, connection_string: str | None, sas_token: str | None
) -> BlobServiceClient:
    """The client for one storage account: from a connection string, from a SAS token, or
    from the standard Azure credential chain (environment, workload or managed identity, CLI)."""
    timeouts = {"connection_timeout": 10, "read_timeout": 60}
    if connection_string:
        return BlobServiceClient.from_connection_string(connection_string, **timeouts)
    assert account_url is not None
    if sas_token:
        return BlobServiceClient(account_url, credential=sas_token, **timeouts)
    from azure.identity import DefaultAzureCredential  # only deployments without keys need it

    return BlobServiceClient(account_url, credential=DefaultAzureCredential(), **timeouts)
