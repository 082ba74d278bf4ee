"""Client-side encryption with age: encrypted before storage, read back by every consumer."""

import base64
import os
import subprocess
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml

from backup_pipelines import names
from backup_pipelines.core.common.config import ConfigError, load_config
from backup_pipelines.core.common.layout import manifest_key
from backup_pipelines.core.postgres.manifest import Manifest
from backup_pipelines_tests.support.age_keys import AGE_MAGIC, new_identity
from backup_pipelines_tests.support.config import target_url, today
from backup_pipelines_tests.support.data import drop, table_fingerprints
from backup_pipelines_tests.support.runbook_html import RunbookParser
from backup_pipelines_tests.support.runs import (
    check_evaluations,
    definitions_for,
    failure_messages,
    materialize_runbook,
    restore_test_evaluations,
    run_backup,
    run_restore,
    run_restore_test_job,
)


@pytest.fixture
def identity(tmp_path, monkeypatch) -> str:
    key = new_identity(tmp_path, "backup")
    monkeypatch.setenv("TEST_AGE_IDENTITY", key)
    return key


@pytest.fixture
def encrypted(write_config, identity, instance, cluster, monkeypatch):
    """agentic backed up to local storage with encryption on; returns (config path, defs)."""
    monkeypatch.setenv("TEST_TARGET_PASSWORD", cluster.superuser_password)
    config = write_config(encryption={"identity": "${TEST_AGE_IDENTITY}"})
    defs = definitions_for(config)
    result = run_backup(defs, instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    return config, defs


def stored_archive(config: Path) -> tuple[Path, Manifest]:
    root = config.parent / "backups" / "archive"
    manifest = Manifest.from_json((root / manifest_key("agentic", today())).read_bytes())
    return root / manifest.object_key, manifest


def test_an_encrypted_backup_is_unreadable_without_the_key_and_restores_with_it(
    encrypted, identity, cluster, instance
):
    config, defs = encrypted
    archive, manifest = stored_archive(config)
    assert archive.name.endswith(".dump.zst.age")
    assert archive.read_bytes().startswith(AGE_MAGIC)
    dump = config.parent / "backups" / "dumps" / manifest.object_key
    assert dump.read_bytes().startswith(AGE_MAGIC)  # the hot copy never held plaintext either
    assert manifest.encryption == "age" and manifest.encryption_recipient.startswith("age1")
    assert identity not in archive.with_name("manifest.json").read_text()

    plain = subprocess.run(["zstd", "-dc", str(archive)], capture_output=True)
    assert plain.returncode != 0  # not a zstd stream: the compressed dump is inside age

    target = "agentic_from_encrypted"
    try:
        result = run_restore(defs, instance, target_url=target_url(cluster), target_database=target)
        assert result.success, failure_messages(result)
        assert table_fingerprints(cluster.url(target)) == table_fingerprints(cluster.url("agentic"))
    finally:
        drop(cluster, target)

    tested = run_restore_test_job(defs, instance, databases=["agentic"])
    assert tested.success, failure_messages(tested)
    assert restore_test_evaluations(tested)["agentic"].passed


def test_the_readme_hand_restore_with_the_key(encrypted, identity, cluster, tmp_path):
    config, _ = encrypted
    archive, _ = stored_archive(config)
    key_file = tmp_path / "backup.key"
    key_file.write_text(identity + "\n")
    key_file.chmod(0o600)
    target = "agentic_by_hand_encrypted"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {target}")
        admin.execute(f"CREATE DATABASE {target}")
    try:
        subprocess.run(
            f"age -d -i '{key_file}' '{archive}' | zstd -d | "
            f'pg_restore --no-owner --exit-on-error -d "$TARGET"',
            shell=True,
            check=True,
            env={
                **os.environ,
                "PGPASSWORD": cluster.superuser_password,
                "TARGET": cluster.url(target, password=""),
            },
        )
        assert table_fingerprints(cluster.url(target)) == table_fingerprints(cluster.url("agentic"))
    finally:
        drop(cluster, target)


def test_the_runbook_hand_restore_decrypts_with_the_identity_file(
    encrypted, identity, cluster, instance, tmp_path
):
    config, defs = encrypted
    materialize_runbook(defs, instance)
    page = (config.parent / "backups" / "archive" / "recovery_runbook.html").read_text()
    parser = RunbookParser()
    parser.feed(page)
    commands = parser.blocks[("hand-restore", "agentic")]
    assert 'age --decrypt --identity "$AGE_IDENTITY_FILE"' in commands
    key_file = tmp_path / "identity.txt"
    key_file.write_text(identity + "\n")
    env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(cluster.port),
        "PGUSER": "postgres",
        "PGPASSWORD": cluster.superuser_password,
        "TARGET_DB": "agentic_runbook_encrypted",
        "AGE_IDENTITY_FILE": str(key_file),
    }
    try:
        subprocess.run(["bash", "-c", commands], cwd=tmp_path, env=env, check=True)
        assert table_fingerprints(cluster.url("agentic_runbook_encrypted")) == (
            table_fingerprints(cluster.url("agentic"))
        )
    finally:
        drop(cluster, "agentic_runbook_encrypted")


def database_exists(cluster, name: str) -> bool:
    with psycopg.connect(cluster.url()) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone())


def test_a_wrong_key_fails_clearly_everywhere_and_restores_nothing(
    encrypted, tmp_path, cluster, instance, monkeypatch
):
    config, defs = encrypted
    other = new_identity(tmp_path, "other")
    monkeypatch.setenv("TEST_AGE_IDENTITY", other)
    defs = definitions_for(config)

    verified = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    contents = check_evaluations(verified)[names.ARCHIVE_CONTENTS]
    assert not contents.passed
    assert "wrong key: the backup is encrypted to age1" in contents.description

    target = "agentic_wrong_key"
    result = run_restore(defs, instance, target_url=target_url(cluster), target_database=target)
    assert not result.success
    assert "wrong key" in failure_messages(result)
    assert not database_exists(cluster, target)

    tested = run_restore_test_job(defs, instance, databases=["agentic"])
    evaluation = restore_test_evaluations(tested)["agentic"]
    assert not evaluation.passed and "wrong key" in evaluation.description
    for text in (failure_messages(result), evaluation.description, contents.description):
        assert other not in text


def test_after_a_key_rotation_old_backups_stay_readable_and_new_ones_use_the_new_key(
    encrypted, identity, tmp_path, cluster, instance, monkeypatch
):
    config, _ = encrypted
    _, old_manifest = stored_archive(config)
    monkeypatch.setenv("TEST_AGE_IDENTITY", new_identity(tmp_path, "rotated"))
    monkeypatch.setenv("TEST_OLD_AGE_IDENTITY", identity)
    document = yaml.safe_load(config.read_text())
    document["encryption"]["previous_identities"] = ["${TEST_OLD_AGE_IDENTITY}"]
    config.write_text(yaml.safe_dump(document))
    defs = definitions_for(config)

    reverified = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    assert check_evaluations(reverified)[names.ARCHIVE_CONTENTS].passed  # old key, still readable
    target = "agentic_after_rotation"
    try:
        result = run_restore(defs, instance, target_url=target_url(cluster), target_database=target)
        assert result.success, failure_messages(result)
    finally:
        drop(cluster, target)

    result = run_backup(defs, instance, databases=("agentic",))  # a new backup of today
    assert result.success, failure_messages(result)
    _, new_manifest = stored_archive(config)
    assert new_manifest.encryption_recipient != old_manifest.encryption_recipient
    assert all(e.passed for e in check_evaluations(result).values())


def test_altered_ciphertext_is_refused_before_any_restore(encrypted, cluster, instance):
    config, defs = encrypted
    archive, _ = stored_archive(config)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    target = "agentic_from_altered"
    result = run_restore(
        defs,
        instance,
        target_url=target_url(cluster),
        target_database=target,
        allow_checksum_mismatch=True,  # past the checksum: age's authentication must stop it
    )
    assert not result.success
    assert "age could not decrypt the archive" in failure_messages(result)
    assert not database_exists(cluster, target)


def test_a_kms_wrapped_identity_is_unwrapped_for_the_run(
    write_config, tmp_path, s3_endpoint, bucket, instance, monkeypatch
):
    identity = new_identity(tmp_path, "kms")
    kms = boto3.client("kms", endpoint_url=s3_endpoint, region_name="us-east-1")
    key_id = kms.create_key(Description="backup_pipelines test")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=identity.encode())["CiphertextBlob"]
    monkeypatch.setenv("TEST_WRAPPED_IDENTITY", base64.b64encode(blob).decode())
    encryption = {
        "kms_wrapped_identity": "${TEST_WRAPPED_IDENTITY}",
        "kms_region": "us-east-1",
        "kms_endpoint_url": s3_endpoint,
    }
    config = write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint, "region": "us-east-1"}},
        encryption=encryption,
    )
    defs = definitions_for(config)
    result = run_backup(defs, instance, databases=("agentic",))
    assert result.success, failure_messages(result)
    assert {name: e.passed for name, e in check_evaluations(result).items()} == {
        names.DUMP_COMPLETE: True,
        names.ARCHIVE_CHECKSUM: True,
        names.ARCHIVE_CONTENTS: True,
        names.SIZE_CHANGE: True,
    }
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    objects = s3.list_objects_v2(Bucket=bucket, Prefix="archive/agentic/")["Contents"]
    (dump,) = [o["Key"] for o in objects if o["Key"].endswith(".age")]
    assert s3.get_object(Bucket=bucket, Key=dump)["Body"].read(64).startswith(AGE_MAGIC)

    monkeypatch.setenv("TEST_WRAPPED_IDENTITY", base64.b64encode(b"not a kms blob").decode())
    failed = run_backup(definitions_for(config), instance, databases=("agentic",))
    messages = failure_messages(failed)
    assert "encryption.kms_wrapped_identity: AWS KMS could not decrypt it" in messages


def test_a_literal_identity_in_the_file_is_refused_without_echoing_it(write_config, tmp_path):
    identity = new_identity(tmp_path, "literal")
    config = write_config(encryption={"identity": identity})
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert "encryption: Value error, identity must be an environment reference" in str(
        refused.value
    )
    assert identity not in str(refused.value)
