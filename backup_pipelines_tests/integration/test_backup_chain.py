"""The whole chain against a real server: back up, restore the archive, compare every row."""

import json
from pathlib import Path

import boto3
import psycopg
from dagster import AssetKey, materialize

from backup_pipelines import names
from backup_pipelines.core.postgres.manifest import Manifest
from backup_pipelines_tests.support.config import TEST_DATABASES, today, yesterday
from backup_pipelines_tests.support.data import (
    restore_into_new_database,
    sha256_of,
    table_fingerprints,
)
from backup_pipelines_tests.support.runs import (
    checks_by_name,
    definitions_for,
    failure_messages,
    materialization,
    run_backup,
)


def leaf_tables(cluster, database: str) -> list[str]:
    with psycopg.connect(cluster.url(database)) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables t JOIN pg_class c "
            "ON c.oid = format('%I.%I', schemaname, tablename)::regclass "
            "WHERE c.relkind = 'r' AND schemaname = 'public'"
        ).fetchall()
    return [name for (name,) in rows]


def archive_file(root: Path, database: str) -> Path:
    (path,) = (root / "archive" / database / today()).glob(f"{database}_*.dump.zst")
    return path


def test_local_backup_restores_to_identical_data(write_config, cluster, instance):
    config = write_config()
    result = run_backup(definitions_for(config), instance)
    assert result.success, failure_messages(result)

    checks = checks_by_name(result)
    for database in TEST_DATABASES:
        for check in (
            names.DUMP_COMPLETE,
            names.ARCHIVE_CHECKSUM,
            names.ARCHIVE_CONTENTS,
            names.SIZE_CHANGE,
        ):
            assert checks[(database, check)].passed, checks[(database, check)].description
            assert checks[(database, check)].partition == today()

        archive = archive_file(config.parent / "backups", database)
        restored = restore_into_new_database(cluster, archive, f"restored_{database}")
        source = table_fingerprints(cluster.url(database))
        assert source and table_fingerprints(restored) == source

        manifest = Manifest.from_json(archive.with_name("manifest.json").read_bytes())
        leaf_rows = {
            r["schema"] + "." + r["name"]: r["rows"]
            for r in manifest.relations
            if r["kind"] == "table"
        }
        assert leaf_rows == {name: source[name][0] for name in leaf_tables(cluster, database)}
        assert manifest.sha256 == sha256_of(archive)

        archived = materialization(result, database, names.ARCHIVE)
        assert archived.metadata["sha256"].value == sha256_of(archive)
        assert archived.metadata["size_bytes"].value == archive.stat().st_size


def test_s3_backup_sets_archive_class_and_restores(
    write_config, cluster, instance, bucket, s3_endpoint, tmp_path
):
    config = write_config(
        storage={
            "s3": {
                "bucket": bucket,
                "prefix": "pg",
                "endpoint_url": s3_endpoint,
                "region": "us-east-1",
                "archive_storage_class": "STANDARD_IA",
                "sse": "AES256",
            }
        }
    )
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert result.success, failure_messages(result)

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    (archive_key,) = [k for k in keys if k.startswith("pg/archive/") and k.endswith(".zst")]
    head = s3.head_object(Bucket=bucket, Key=archive_key)
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"

    metadata = materialization(result, "agentic", names.ARCHIVE).metadata
    assert metadata["uri"].value == f"s3://{bucket}/{archive_key}"
    assert metadata["storage_class"].value == "STANDARD_IA"
    local_copy = tmp_path / "agentic.dump.zst"
    s3.download_file(bucket, archive_key, str(local_copy))
    assert metadata["sha256"].value == sha256_of(local_copy)
    assert metadata["size_bytes"].value == local_copy.stat().st_size

    restored = restore_into_new_database(cluster, local_copy, "restored_from_s3")
    assert table_fingerprints(restored) == table_fingerprints(cluster.url("agentic"))


def test_flipped_byte_in_archive_fails_verification(write_config, instance):
    config = write_config()
    defs = definitions_for(config)
    assert run_backup(defs, instance, databases=("agentic",)).success

    archive = archive_file(config.parent / "backups", "agentic")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))

    result = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    assert not result.success  # the integrity checks are blocking ERRORs
    checksum = checks_by_name(result)[("agentic", names.ARCHIVE_CHECKSUM)]
    assert not checksum.passed
    assert checksum.metadata["sha256_actual"].value == sha256_of(archive)
    assert checksum.metadata["sha256_expected"].value != sha256_of(archive)


def test_truncated_archive_fails_verification(write_config, instance):
    config = write_config()
    defs = definitions_for(config)
    assert run_backup(defs, instance, databases=("agentic",)).success
    archive = archive_file(config.parent / "backups", "agentic")
    archive.write_bytes(archive.read_bytes()[:200])

    result = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    checks = checks_by_name(result)
    assert not checks[("agentic", names.ARCHIVE_CHECKSUM)].passed
    assert not checks[("agentic", names.ARCHIVE_CONTENTS)].passed
    assert "cannot read" in checks[("agentic", names.ARCHIVE_CONTENTS)].description


def test_verification_alone_reruns_every_integrity_check(write_config, instance):
    defs = definitions_for(write_config())
    assert run_backup(defs, instance, databases=("agentic",)).success
    result = run_backup(defs, instance, steps=("verification",), databases=("agentic",))
    assert result.success
    assert {name for (_, name) in checks_by_name(result)} == {
        names.ARCHIVE_CHECKSUM,
        names.ARCHIVE_CONTENTS,
        names.SIZE_CHANGE,
    }


def test_dump_for_a_past_day_is_refused_at_once(write_config, instance):
    config = write_config()
    result = run_backup(definitions_for(config), instance, day=yesterday(), databases=("agentic",))
    assert not result.success
    message = failure_messages(result)
    assert "only today's partition" in message and "'agentic'" in message
    assert not (config.parent / "backups" / "dumps").exists()


def test_archive_of_a_day_without_dump_fails_clearly(write_config, instance):
    result = run_backup(
        definitions_for(write_config()),
        instance,
        day=yesterday(),
        steps=("archive", "verification"),
        databases=("agentic",),
    )
    assert not result.success
    assert "there is no dump of database 'agentic'" in failure_messages(result)


def test_second_dump_of_the_day_replaces_the_first(write_config, instance):
    config = write_config()
    defs = definitions_for(config)
    assert run_backup(defs, instance, steps=("dump",), databases=("agentic",)).success
    day_dir = config.parent / "backups" / "dumps" / "agentic" / today()
    first = json.loads((day_dir / "manifest.json").read_text())["object_key"]
    import time

    time.sleep(1.1)  # object names carry the snapshot second
    assert run_backup(defs, instance, steps=("dump",), databases=("agentic",)).success
    second = json.loads((day_dir / "manifest.json").read_text())["object_key"]
    assert first != second
    assert sorted(p.name for p in day_dir.iterdir()) == sorted(["manifest.json", Path(second).name])
    assert (
        instance.get_latest_materialization_event(
            AssetKey(["postgres", "agentic", "dump"])
        ).asset_materialization.partition
        == today()
    )


def test_re_execution_from_asset_failure_keeps_the_days_dump(write_config, instance):
    """The chain is one step; re-executing its failed run from asset failure (the UI's choice,
    and the daily job's retry strategy) archives the dump already taken instead of a new one."""
    config = write_config()
    defs = definitions_for(config)
    blocker = config.parent / "backups" / "archive"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory: the archive store cannot be written")
    failed = run_backup(defs, instance, databases=("agentic",))
    assert not failed.success
    assert "cannot write" in failure_messages(failed)
    dump = materialization(failed, "agentic", names.DUMP)
    assert checks_by_name(failed)[("agentic", names.DUMP_COMPLETE)].passed
    assert not failed.get_asset_materialization_events()[1:]  # archive and verification not

    run = instance.get_run_by_id(failed.run_id)
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    assets, checks = instance.run_domain.get_keys_to_reexecute(failed.run_id, plan)
    assert assets == {names.database_key("agentic", s) for s in (names.ARCHIVE, names.VERIFICATION)}
    assert {check.name for check in checks} == set(names.BACKUP_CHECKS[names.VERIFICATION])

    blocker.unlink()
    retried = materialize(
        assets=list(defs.assets or []),
        selection=list(assets),
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
    )
    assert retried.success
    archived = materialization(retried, "agentic", names.ARCHIVE)
    assert archived.metadata["sha256"].value == dump.metadata["sha256"].value
    evaluated = {name for (_, name) in checks_by_name(retried)}
    assert evaluated == set(names.BACKUP_CHECKS[names.VERIFICATION])
