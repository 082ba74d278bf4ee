"""Azure and GCS containers for a test, with their official clients' own calls."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from azure.storage.blob import BlobServiceClient
from google.cloud import storage as gcs


@dataclass
class Cloud:
    """One container or bucket, and its official client's own calls (the tests' second
    opinion: never this project's store code)."""

    kind: str
    storage: dict
    archive_class: str
    listed: Callable[[], dict[str, int]]  # key: size
    download: Callable[[str], bytes]
    upload: Callable[[str, bytes], None]
    storage_class: Callable[[str], str]


def azure_cloud(connection_string: str, monkeypatch) -> Cloud:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
    name = f"backups-{uuid.uuid4().hex[:12]}"
    container = BlobServiceClient.from_connection_string(connection_string).create_container(name)
    return Cloud(
        kind="azure",
        storage={
            "azure": {
                "container": name,
                "prefix": "pg",
                "connection_string": "${AZURE_STORAGE_CONNECTION_STRING}",
                "archive_tier": "Cool",
            }
        },
        archive_class="Cool",
        listed=lambda: {blob.name: blob.size for blob in container.list_blobs()},
        download=lambda key: container.download_blob(key).readall(),
        upload=lambda key, data: container.upload_blob(key, data, overwrite=True),
        storage_class=lambda key: container.get_blob_client(key).get_blob_properties().blob_tier,
    )


def gcs_cloud(endpoint: str) -> Cloud:
    client = gcs.Client(project="test")
    bucket = client.create_bucket(f"backups-{uuid.uuid4().hex[:12]}")
    return Cloud(
        kind="gcs",
        storage={
            "gcs": {
                "bucket": bucket.name,
                "prefix": "pg",
                "project": "test",
                "archive_storage_class": "NEARLINE",
            }
        },
        # The emulator keeps the source's class on a rewrite (real GCS applies the class the
        # rewrite asks for), so on it the archive copy reads back as STANDARD.
        archive_class="STANDARD",
        listed=lambda: {blob.name: blob.size for blob in client.list_blobs(bucket)},
        download=lambda key: bucket.blob(key).download_as_bytes(),
        upload=lambda key, data: bucket.blob(key).upload_from_string(data),
        storage_class=lambda key: bucket.get_blob(key).storage_class,
    )
