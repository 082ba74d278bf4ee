"""The backup chain on Azure Blob Storage (Azurite) and Google Cloud Storage (gcp-storage-emulator),
each over HTTP through its official client: restore and compare, a flipped byte caught, an
interrupted upload leaving nothing, and bad settings named."""

import json
import os

import pytest

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.core.retention.usage import storage_usage
from backup_pipelines.storage import writing
from backup_pipelines.storage.digest import digest_chunks
from backup_pipelines_tests.support.clouds import Cloud, azure_cloud
from backup_pipelines_tests.support.data import (
    restore_into_new_database,
    sha256_of,
    table_fingerprints,
)
from backup_pipelines_tests.support.emulators import AZURITE_ACCOUNT_KEY
from backup_pipelines_tests.support.runs import (
    checks_by_name,
    definitions_for,
    failure_messages,
    materialization,
    run_backup,
)

MIB = 1 << 20


def archive_key(cloud: Cloud, database: str) -> str:
    (key,) = [
        k for k in cloud.listed() if k.startswith(f"pg/archive/{database}/") and k.endswith(".zst")
    ]
    return key


def test_backup_restores_to_identical_data(cloud, write_config, cluster, instance, tmp_path):
    config = write_config(storage=cloud.storage)
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    checks = checks_by_name(result)
    for check in (names.DUMP_COMPLETE, names.ARCHIVE_CHECKSUM, names.ARCHIVE_CONTENTS):
        assert checks[("agentic", check)].passed, checks[("agentic", check)].description

    key = archive_key(cloud, "agentic")
    assert any(k.startswith("pg/dumps/agentic/") and k.endswith(".zst") for k in cloud.listed())
    assert cloud.storage_class(key) == cloud.archive_class
    metadata = materialization(result, "agentic", names.ARCHIVE).metadata
    assert metadata["storage_class"].value == cloud.archive_class
    assert metadata["uri"].value.endswith(f"/{key}")

    # Storage usage counts what the store's own listing holds for the database.
    usage = storage_usage(stores_from_config(load_config(config)), ["agentic"], [])["agentic"]
    listed = {key: size for key, size in cloud.listed().items() if "/agentic/" in key}
    assert (usage.bytes, usage.objects) == (sum(listed.values()), len(listed))

    local_copy = tmp_path / "agentic.dump.zst"
    local_copy.write_bytes(cloud.download(key))
    assert metadata["sha256"].value == sha256_of(local_copy)
    restored = restore_into_new_database(cluster, local_copy, f"restored_from_{cloud.kind}")
    assert table_fingerprints(restored) == table_fingerprints(cluster.url("agentic"))


def test_flipped_byte_fails_verification(cloud, write_config, instance):
    defs = definitions_for(write_config(storage=cloud.storage))
    assert run_backup(defs, instance, databases=("agentic",)).success
    key = archive_key(cloud, "agentic")
    data = bytearray(cloud.download(key))
    data[len(data) // 2] ^= 0x01
    cloud.upload(key, bytes(data))

    result = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    assert not result.success
    checksum = checks_by_name(result)[("agentic", names.ARCHIVE_CHECKSUM)]
    assert not checksum.passed
    assert checksum.metadata["sha256_actual"].value != checksum.metadata["sha256_expected"].value


def test_parted_upload_round_trips_and_an_interrupted_one_leaves_nothing(cloud, write_config):
    dumps = stores_from_config(load_config(write_config(storage=cloud.storage))).dumps
    body = os.urandom(19 * MIB)  # three parts of 8 MiB: the last one short
    written = dumps.write_chunks("whole.bin", (body[i : i + MIB] for i in range(0, len(body), MIB)))
    assert written.size == len(body)
    assert cloud.download("pg/dumps/whole.bin") == body
    assert digest_chunks(dumps.read_chunks("whole.bin")) == written

    writer = dumps.open_writer("cut.bin")
    with pytest.raises(RuntimeError, match="the dump died"), writing(writer):
        for start in range(0, len(body), MIB):
            writer.write(body[start : start + MIB])  # two parts are uploaded by now
        raise RuntimeError("the dump died")
    assert "pg/dumps/cut.bin" not in cloud.listed()
    assert dumps.size("cut.bin") is None


def test_deleting_what_is_already_gone_succeeds(cloud, write_config):
    """A prune killed after a deletion repeats it on its next run (test_retention_prune)."""
    dumps = stores_from_config(load_config(write_config(storage=cloud.storage))).dumps
    dumps.write_bytes("once.bin", b"x")
    dumps.delete("once.bin")
    dumps.delete("once.bin")
    dumps.delete("never-written.bin")
    assert "pg/dumps/once.bin" not in cloud.listed()


def test_the_prefix_may_come_from_the_environment(cloud, write_config, monkeypatch):
    monkeypatch.setenv("TEST_PREFIX", "tenant-7")
    settings = {**cloud.storage[cloud.kind], "prefix": "${TEST_PREFIX}"}
    config = load_config(write_config(storage={cloud.kind: settings}))
    stores_from_config(config).dumps.write_bytes("probe.bin", b"x")
    assert "tenant-7/dumps/probe.bin" in cloud.listed()


def test_missing_container_or_bucket_is_named(cloud, write_config, instance):
    storage = {cloud.kind: {**cloud.storage[cloud.kind]}}
    place = "container" if cloud.kind == "azure" else "bucket"
    storage[cloud.kind][place] = "no-such-place"
    result = run_backup(
        definitions_for(write_config(storage=storage)), instance, databases=("agentic",)
    )
    assert not result.success
    message = failure_messages(result)
    assert f"does not exist (storage.{cloud.kind}.{place})" in message, message
    assert "no-such-place" in message


def test_wrong_azure_key_is_refused_without_showing_it(
    azurite, write_config, instance, monkeypatch
):
    cloud = azure_cloud(azurite, monkeypatch)
    wrong_key = AZURITE_ACCOUNT_KEY[::-1]
    wrong = azurite.replace(AZURITE_ACCOUNT_KEY, wrong_key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    result = run_backup(
        definitions_for(write_config(storage=cloud.storage)), instance, databases=("agentic",)
    )
    assert not result.success
    message = failure_messages(result)
    assert "no permission for http://127.0.0.1:" in message, message
    assert "check the connection string or SAS token" in message
    for event in result.all_events:
        assert wrong_key not in str(event) and AZURITE_ACCOUNT_KEY not in str(event)


def test_a_bad_gcs_key_file_is_named_without_its_contents(
    gcs_emulator, write_config, instance, tmp_path, monkeypatch
):
    secret = "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC-never-print-me"
    key_file = tmp_path / "key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "backups@acme.iam.gserviceaccount.com",
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    monkeypatch.setenv("TEST_GCS_KEY", str(key_file))
    storage = {"gcs": {"bucket": "backups", "credentials_file": "${TEST_GCS_KEY}"}}
    result = run_backup(
        definitions_for(write_config(storage=storage)), instance, databases=("agentic",)
    )
    assert not result.success
    # The step's resources fail to build, so the reason is on the failure events' causes.
    events = "\n".join(str(event) for event in result.all_events)
    assert "storage.gcs.credentials_file: not a service account key file" in events
    assert secret not in events


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"sas_token": "sv=2024-01-01&sig=abc"}, "sas_token must be an environment reference"),
        # Archive is offline: the archive copy is read back at once.
        ({"archive_tier": "Archive"}, "archive_tier"),
        ({"account_url": None}, "give account_url"),
    ],
)
def test_bad_azure_settings_are_refused_at_load(write_config, setting, expected):
    azure = {"container": "backups", "account_url": "https://account.blob.core.windows.net"}
    azure = {key: value for key, value in {**azure, **setting}.items() if value is not None}
    with pytest.raises(Exception, match=expected):
        load_config(write_config(storage={"azure": azure}))
