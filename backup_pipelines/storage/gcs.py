"""A Google Cloud Storage bucket (or prefix) as a store: resumable uploads finalized only by
their last chunk, server-side rewrites into an archive storage class."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from typing import Any

import requests
from google.api_core.exceptions import Forbidden, GoogleAPIError, NotFound, Unauthorized
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage

from backup_pipelines.storage.base import ObjectStore, ObjectWriter, StorageError, StoredObject
from backup_pipelines.storage.digest import CHUNK_SIZE as READ_SIZE
from backup_pipelines.storage.parts import MIB, PartedWriter

# GCS chunks must be multiples of 256 KiB (every part size here is a whole MiB). Their number
# is not limited, so their size stays fixed and memory flat in the object's size. They go one
# at a time, each a round trip: larger than S3's parts.
_UNLIMITED_CHUNKS = 1 << 40
CHUNK_SIZE = 16 * MIB
_READ_AHEAD = 8 * MIB
_TIMEOUT = (10, 120)  # connect, read (seconds)
_ERRORS = (GoogleAPIError, GoogleAuthError, requests.RequestException)


def describe_gcs_error(error: Exception, where: str) -> str:
    if isinstance(error, GoogleAuthError):
        return (
            f"no Google credentials for {where}: set storage.gcs.credentials_file or "
            "GOOGLE_APPLICATION_CREDENTIALS, or run with a service account"
        )
    if isinstance(error, Forbidden | Unauthorized):
        return (
            f"no permission for {where} (HTTP {error.code}): grant the service account "
            "roles/storage.objectAdmin on the bucket or fix its key"
        )
    if isinstance(error, GoogleAPIError):
        return f"GCS error on {where}: HTTP {getattr(error, 'code', '')} {type(error).__name__}"
    return f"GCS error on {where}: {type(error).__name__}"


class _GcsWriter(PartedWriter):
    """One resumable upload session. Its chunks go in order (one in flight); only the last,
    which states the total size, finalizes the object."""

    def __init__(self, store: GcsStore, key: str, expected_size: int) -> None:
        self._store = store
        self._blob = store.blob(key)
        super().__init__(
            store.uri(key),
            expected_size,
            max_parts=_UNLIMITED_CHUNKS,
            in_flight=1,
            min_part_size=CHUNK_SIZE,
        )
        self._session_url = ""
        self._http = requests.Session()

    def _begin(self) -> None:
        self._session_url = self._store.call(
            self._blob.create_resumable_upload_session,
            self._where,
            content_type="application/octet-stream",
            checksum=None,
        )

    def _upload_part(self, number: int, body: bytes, total: int | None) -> None:
        start = (number - 1) * self._part_size
        end = start + len(body) - 1
        headers = {"Content-Range": f"bytes {start}-{end}/{'*' if total is None else total}"}
        # The session URL itself authorizes the upload (it is a capability, never logged).
        try:
            response = self._http.put(
                self._session_url, data=body, headers=headers, timeout=_TIMEOUT
            )
        except requests.RequestException as error:
            raise StorageError(describe_gcs_error(error, self._where)) from None
        expected = (308,) if total is None else (200, 201)
        if response.status_code not in expected:
            raise StorageError(
                f"GCS upload of {self._where}: chunk {number} answered HTTP "
                f"{response.status_code}, expected {' or '.join(map(str, expected))}"
            )

    def _complete(self, parts: list[Any]) -> None:
        pass  # the last chunk, carrying the total, finalized the object

    def _put_whole(self, body: bytes) -> None:
        self._store.call(
            self._blob.upload_from_string,
            self._where,
            body,
            content_type="application/octet-stream",
        )

    def _abort_upload(self) -> None:
        with contextlib.suppress(requests.RequestException):
            self._http.delete(self._session_url, timeout=_TIMEOUT)


class GcsStore(ObjectStore):
    def __init__(
        self,
        client: storage.Client,
        bucket: str,
        prefix: str = "",
        *,
        storage_class: str | None = None,
        setting: str = "storage.gcs.bucket",
    ) -> None:
        self.client = client
        self.bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.archive_class = storage_class
        self.setting = setting

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{self.full_key(key)}"

    def blob(self, key: str) -> storage.Blob:
        blob = self.bucket.blob(self.full_key(key))
        if self.archive_class:
            blob.storage_class = self.archive_class
        return blob

    def call(self, operation: Any, where: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, timeout=_TIMEOUT, **kwargs)
        except _ERRORS as error:
            raise self.error(error, where) from None

    def error(self, error: Exception, where: str) -> StorageError:
        """A 404 names the bucket when it is the bucket that is missing."""
        if isinstance(error, NotFound) and not self.bucket.exists(timeout=_TIMEOUT):
            return StorageError(
                f"GCS bucket of {where} does not exist ({self.setting}): create it or fix the name"
            )
        return StorageError(describe_gcs_error(error, where))

    def download_command(self, key: str, destination: str) -> str:
        return f"gcloud storage cp {shlex.quote(self.uri(key))} {shlex.quote(destination)}"

    def open_writer(self, key: str, *, expected_size: int = 0) -> ObjectWriter:
        return _GcsWriter(self, key, expected_size)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        where = self.uri(key)
        try:
            with self.bucket.blob(self.full_key(key)).open(
                "rb", chunk_size=_READ_AHEAD, timeout=_TIMEOUT
            ) as reader:
                yield from iter(lambda: reader.read(READ_SIZE), b"")
        except _ERRORS as error:
            raise self.error(error, where) from None

    def _stored(self, key: str) -> storage.Blob | None:
        return self.call(self.bucket.get_blob, self.uri(key), self.full_key(key))

    def size(self, key: str) -> int | None:
        blob = self._stored(key)
        return None if blob is None else blob.size

    def storage_class(self, key: str) -> str | None:
        blob = self._stored(key)
        return None if blob is None else blob.storage_class

    def copy_from(self, source: ObjectStore, source_key: str, key: str) -> None:
        if not isinstance(source, GcsStore) or source.client is not self.client:
            self.copy_streamed(source, source_key, key)
            return
        # A rewrite (not copyTo): it may take several calls for a large object, and it is the
        # call that sets the destination's storage class.
        source_blob = source.bucket.blob(source.full_key(source_key))
        target = self.blob(key)
        token = None
        while True:
            token, _, _ = self.call(target.rewrite, self.uri(key), source_blob, token=token)
            if token is None:
                return

    def delete(self, key: str) -> None:
        try:
            self.bucket.blob(self.full_key(key)).delete(timeout=_TIMEOUT)
        except NotFound:
            return
        except _ERRORS as error:
            raise self.error(error, self.uri(key)) from None

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for blob in self.client.list_blobs(
                self.bucket, prefix=self.full_key(prefix), timeout=_TIMEOUT
            ):
                yield StoredObject(blob.name[strip:], blob.size, blob.etag)
        except _ERRORS as error:
            raise self.error(error, self.uri(prefix)) from None


def gcs_client(project: str | None, credentials_file: str | None) -> storage.Client:
    """From a service account key file, or the standard Google chain (GOOGLE_APPLICATION_
    CREDENTIALS, workload identity, the metadata server); STORAGE_EMULATOR_HOST is honoured."""
    try:
        if credentials_file:
            return storage.Client.from_service_account_json(credentials_file, project=project)
        return storage.Client(project=project)
    except OSError as error:
        raise StorageError(
            f"storage.gcs.credentials_file: cannot read the key file ({error.strerror})"
        ) from None
    except (ValueError, KeyError) as error:  # the messages may quote the key: not shown
        raise StorageError(
            "storage.gcs.credentials_file: not a service account key file "
            f"({type(error).__name__}); download a JSON key of the service account"
        ) from None
    except GoogleAuthError as error:
        raise StorageError(describe_gcs_error(error, "storage.gcs")) from None
