"""The second copy (replica:): each verified archive copied to another store and proved there,
then restored from that store alone with the primary bucket gone and its credentials unset. A
replica store that refuses writes, a copy damaged on the way and wrong credentials each fail
the replica's check, and leave nothing in the replica store."""

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)
from dagster import build_sensor_context
from moto.server import ThreadedMotoServer

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import replica_store, stores_from_config
from backup_pipelines.defs.alerts.health import check_problems, replica_age_problems
from backup_pipelines_tests.support.clouds import Cloud, azure_cloud, gcs_cloud
from backup_pipelines_tests.support.config import target_url, today
from backup_pipelines_tests.support.data import drop, table_fingerprints
from backup_pipelines_tests.support.emulators import AZURITE_ACCOUNT_KEY
from backup_pipelines_tests.support.proxy import damaging_proxy
from backup_pipelines_tests.support.runbook_html import RunbookParser
from backup_pipelines_tests.support.runs import (
    check_evaluations,
    definitions_for,
    failure_messages,
    materialize_runbook,
    record_check_evaluations,
    run_backup,
    run_restore,
)
from backup_pipelines_tests.support.synthetic_history import write_synthetic_history

REPLICA_REGION = "eu-west-1"


@pytest.fixture(scope="module")
def replica_endpoint(s3_endpoint: str) -> Iterator[str]:
    """A second S3 endpoint (another region's): copies to it are streamed, never server-side.
    (After the first, whose fixture sets the test credentials the tests' own clients use.)"""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def new_bucket(endpoint: str, region: str | None = None) -> str:
    name = f"replica-{uuid.uuid4().hex[:12]}"
    location = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region else {}
    boto3.client("s3", endpoint_url=endpoint, region_name=region).create_bucket(
        Bucket=name, **location
    )
    return name


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def s3_settings(bucket: str, endpoint: str, prefix: str, keys: str, **extra) -> dict:
    """An S3 store with its own credentials, named by ${<keys>_KEY_ID} and ${<keys>_SECRET}."""
    return {
        "s3": {
            "bucket": bucket,
            "endpoint_url": endpoint,
            "prefix": prefix,
            "access_key_id": f"${{{keys}_KEY_ID}}",
            "secret_access_key": f"${{{keys}_SECRET}}",
            **extra,
        }
    }


def run_step(defs, instance, job: str, step: str, databases=("agentic",), day=None):
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=day or today(),
        asset_selection=[names.database_key(db, step) for db in databases],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def replicate(defs, instance, **options):
    return run_step(defs, instance, names.REPLICATE_JOB, names.REPLICA, **options)


def drill(defs, instance, **options):
    return run_step(defs, instance, names.FAILOVER_DRILL_JOB, names.REPLICA_RESTORE_TEST, **options)


def sensor_requests(defs, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def(names.NEW_ARCHIVE_REPLICA_SENSOR)
    with build_sensor_context(
        instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
    ) as context:
        result = sensor.evaluate_tick(context)
    return result.run_requests or [], result.cursor


def restore_by_hand_from_the_replica_runbook(endpoint, bucket, cluster, folder, target) -> None:
    """The runbook's copy in the replica store: its replica commands, run as an operator would,
    with only the replica's credentials."""
    page = (
        boto3.client("s3", endpoint_url=endpoint)
        .get_object(Bucket=bucket, Key="dr/archive/recovery_runbook.html")["Body"]
        .read()
        .decode()
    )
    parser = RunbookParser()
    parser.feed(page)
    commands = parser.blocks[("hand-restore", "agentic:replica")]
    assert f"s3://{bucket}/dr/archive/agentic/" in commands
    assert "from_replica: true" in parser.blocks[("restore-job", "agentic:replica")]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(cluster.port),
        "PGUSER": "postgres",
        "PGPASSWORD": cluster.superuser_password,
        "TARGET_DB": target,
    }
    subprocess.run(["bash", "-c", commands], cwd=folder, env=env, check=True)
    assert table_fingerprints(cluster.url(target)) == table_fingerprints(cluster.url("agentic"))


@pytest.fixture
def restored_databases(cluster) -> Iterator[tuple[str, str]]:
    """The databases the test restores into, dropped afterwards."""
    names_ = ("agentic_from_replica", "agentic_by_hand_from_replica")
    yield names_
    for name in names_:
        drop(cluster, name)


def test_the_replica_restores_with_the_primary_bucket_gone(
    write_config,
    cluster,
    instance,
    bucket,
    s3_endpoint,
    replica_endpoint,
    monkeypatch,
    tmp_path,
    restored_databases,
):
    for keys, value in (("PRIMARY", "testing"), ("REPLICA", "replica-account")):
        monkeypatch.setenv(f"{keys}_KEY_ID", value)
        monkeypatch.setenv(f"{keys}_SECRET", f"{value}-secret")
    monkeypatch.setenv("TEST_TARGET_PASSWORD", cluster.superuser_password)
    replica_bucket = new_bucket(replica_endpoint, REPLICA_REGION)
    defs = definitions_for(
        write_config(
            storage=s3_settings(bucket, s3_endpoint, "pg", "PRIMARY"),
            replica=s3_settings(
                replica_bucket, replica_endpoint, "dr", "REPLICA", region=REPLICA_REGION
            ),
        )
    )
    daily = defs.resolve_job_def(names.DAILY_BACKUP_JOB)
    assert not {names.database_key("agentic", step) for step in names.REPLICA_STEPS} & set(
        daily.asset_layer.executable_asset_keys
    ), "a backup run must never wait for the replica"

    _, cursor = sensor_requests(defs, instance, None)
    assert run_backup(defs, instance, databases=("agentic",)).success
    (request,), _ = sensor_requests(defs, instance, cursor)
    assert request.partition_key == today()
    assert request.asset_selection == [names.database_key("agentic", names.REPLICA)]

    result = replicate(defs, instance)
    assert result.success, failure_messages(result)
    check = check_evaluations(result)[names.REPLICA_VERIFIED]
    assert check.passed, check.description
    assert "every byte decoded" in check.description
    for event in result.all_events:  # neither store's secret key shows anywhere
        assert "replica-account-secret" not in str(event) and "testing-secret" not in str(event)
    primary_manifest = json.loads(
        boto3.client("s3", endpoint_url=s3_endpoint)
        .get_object(Bucket=bucket, Key=f"pg/archive/agentic/{today()}/manifest.json")["Body"]
        .read()
    )
    assert bucket_keys(replica_endpoint, replica_bucket) == sorted(
        [
            f"dr/archive/{primary_manifest['object_key']}",
            f"dr/archive/agentic/{today()}/manifest.json",
        ]
    )
    replica_manifest = json.loads(
        boto3.client("s3", endpoint_url=replica_endpoint)
        .get_object(Bucket=replica_bucket, Key=f"dr/archive/agentic/{today()}/manifest.json")[
            "Body"
        ]
        .read()
    )
    assert replica_manifest["sha256"] == primary_manifest["sha256"]
    assert replica_manifest["replicated_at"]
    materialize_runbook(defs, instance)  # written to both stores

    # The primary is gone: its bucket deleted, its credentials unset.
    primary = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in bucket_keys(s3_endpoint, bucket):
        primary.delete_object(Bucket=bucket, Key=key)
    primary.delete_bucket(Bucket=bucket)
    monkeypatch.delenv("PRIMARY_KEY_ID")
    monkeypatch.delenv("PRIMARY_SECRET")

    drilled = drill(defs, instance)
    assert drilled.success, failure_messages(drilled)
    assert check_evaluations(drilled)[names.RESTORED_DATA_MATCHES].passed

    restored = run_restore(
        defs,
        instance,
        from_replica=True,
        target_url=target_url(cluster),
        target_database=restored_databases[0],
    )
    assert restored.success, failure_messages(restored)
    assert table_fingerprints(cluster.url(restored_databases[0])) == table_fingerprints(
        cluster.url("agentic")
    )
    restore_by_hand_from_the_replica_runbook(
        replica_endpoint, replica_bucket, cluster, tmp_path, restored_databases[1]
    )
    # Without the replica, the same restore has nothing to read from.
    from_primary = run_restore(
        defs, instance, target_url=target_url(cluster), target_database="agentic_from_primary"
    )
    assert not from_primary.success
    assert "PRIMARY_KEY_ID is not set" in failure_messages(from_primary)


@pytest.fixture(params=["azure", "gcs", "local"])
def replica_place(request, tmp_path, monkeypatch) -> tuple[dict, Callable[[], list[str]]]:
    """A replica store of each kind, and a listing of what it holds (by its own client)."""
    if request.param == "local":
        root = tmp_path / "second-site"
        files = lambda: [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]  # noqa: E731
        return {"local": {"path": str(root)}}, files
    if request.param == "azure":
        cloud = azure_cloud(request.getfixturevalue("azurite"), monkeypatch)
    else:
        cloud = gcs_cloud(request.getfixturevalue("gcs_emulator"))
    return cloud.storage, lambda: list(cloud.listed())


def test_every_kind_of_store_holds_a_proved_replica(replica_place, write_config, instance):
    replica, listed = replica_place
    defs = definitions_for(write_config(replica=replica))
    assert run_backup(defs, instance, databases=("agentic",)).success
    result = replicate(defs, instance)
    assert result.success, failure_messages(result)
    assert check_evaluations(result)[names.REPLICA_VERIFIED].passed
    assert any(key.endswith(f"archive/agentic/{today()}/manifest.json") for key in listed())
    drilled = drill(defs, instance)
    assert drilled.success, failure_messages(drilled)
    assert check_evaluations(drilled)[names.RESTORED_DATA_MATCHES].passed


def assert_replica_failed(result, *expected: str) -> str:
    assert not result.success
    check = check_evaluations(result)[names.REPLICA_VERIFIED]
    assert not check.passed
    assert any(text in check.description for text in expected), check.description
    return check.description


def test_a_copy_damaged_on_the_way_fails_and_leaves_nothing(
    write_config, instance, replica_endpoint, monkeypatch
):
    monkeypatch.setenv("REPLICA_KEY_ID", "replica-account")
    monkeypatch.setenv("REPLICA_SECRET", "replica-account-secret")
    replica_bucket = new_bucket(replica_endpoint)
    with damaging_proxy(replica_endpoint) as (through_proxy, flipper):
        defs = definitions_for(
            write_config(replica=s3_settings(replica_bucket, through_proxy, "dr", "REPLICA"))
        )
        assert run_backup(defs, instance, databases=("agentic",)).success
        result = replicate(defs, instance)
    assert flipper.flipped
    # boto3 checks each download against the checksum sent with the upload; where a client
    # does not, the SHA-256 read back does (as verification's own flipped-byte tests show).
    description = assert_replica_failed(result, "did not match calculated checksum", "DIFFER")
    assert "othing was committed" in description
    assert bucket_keys(replica_endpoint, replica_bucket) == []


@pytest.fixture
def azure_replica(azurite, monkeypatch) -> Cloud:
    return azure_cloud(azurite, monkeypatch)


def read_only_sas(azurite: str) -> str:
    service = BlobServiceClient.from_connection_string(azurite)
    return generate_account_sas(
        service.account_name,
        AZURITE_ACCOUNT_KEY,
        ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


@pytest.mark.parametrize("fault", ["refuses writes", "wrong credentials"])
def test_a_replica_store_that_cannot_be_written_fails_its_check(
    fault, azure_replica, azurite, write_config, instance, monkeypatch
):
    settings = dict(azure_replica.storage["azure"])
    if fault == "refuses writes":
        monkeypatch.setenv("REPLICA_SAS", read_only_sas(azurite))
        del settings["connection_string"]
        settings.update(
            sas_token="${REPLICA_SAS}",
            account_url=BlobServiceClient.from_connection_string(azurite).url.rstrip("/"),
        )
    else:
        monkeypatch.setenv(
            "REPLICA_AZURE", azurite.replace(AZURITE_ACCOUNT_KEY, AZURITE_ACCOUNT_KEY[::-1])
        )
        settings["connection_string"] = "${REPLICA_AZURE}"
    defs = definitions_for(write_config(replica={"azure": settings}))
    backup = run_backup(defs, instance, databases=("agentic",))
    assert backup.success, "the primary chain does not depend on the replica"
    description = assert_replica_failed(replicate(defs, instance), "no permission")
    assert "Nothing was committed" in description
    assert azure_replica.listed() == {}
    assert AZURITE_ACCOUNT_KEY[::-1] not in description

    # The alerts sensor's view: the failed check, and no proved replica for longer than allowed.
    (problem,) = check_problems(instance, ["agentic"], [], "http://ui", replicated=True)
    assert problem.title == f"agentic: check replica_verified failed (ERROR) for {today()}"
    now = dt.datetime.now(dt.UTC)
    (stale,) = replica_age_problems(
        instance,
        ["agentic"],
        now=now,
        watching_since=now - dt.timedelta(days=3),
        max_age=dt.timedelta(days=2),
        ui="http://ui",
    )
    assert stale.title.startswith("agentic: no proved copy in the replica store for 72.0 h")
    assert f"newest verified archive: {today()}" in stale.details


def test_only_a_verified_archive_is_replicated(write_config, instance, tmp_path):
    defs = definitions_for(write_config(replica={"local": {"path": str(tmp_path / "second")}}))
    record_check_evaluations(
        instance,
        names.database_key("agentic", names.VERIFICATION),
        names.VERIFYING_CHECKS,
        today(),
        passed=False,
    )
    result = replicate(defs, instance)
    assert not result.success
    assert "the archive is not verified" in failure_messages(result)
    assert not (tmp_path / "second").exists()


def stored_days(store, database: str = "agentic") -> set[str]:
    return {key.split("/")[1] for key in store.list_keys(f"{database}/") if key.endswith(".json")}


def retention_run(defs, instance) -> None:
    sensor = defs.resolve_sensor_def(names.RETENTION_SENSOR)
    with build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
    ) as context:
        result = sensor.evaluate_tick(context)
    for request in result.run_requests or []:
        pruned = defs.resolve_job_def(names.PRUNE_JOB).execute_in_process(
            run_config=request.run_config, instance=instance, resources=defs.resources
        )
        assert pruned.success


def test_the_replica_keeps_by_its_own_rules_and_never_its_last_proved_copy(
    write_config, instance, tmp_path
):
    path = write_config(
        retention={"daily": 3, "weekly": 0, "monthly": 0, "min_keep": 1},
        replica={"local": {"path": str(tmp_path / "second")}, "retention": {"daily": 10}},
    )
    config, defs = load_config(path), definitions_for(path)
    stores, replica = stores_from_config(config), replica_store(config)
    days = [dt.datetime.now(dt.UTC).date() - dt.timedelta(days=n) for n in range(12)]
    # agentic's copies in the replica are all proved; none of langfuse's is.
    for database, replica_proved in (("agentic", True), ("langfuse", False)):
        write_synthetic_history(stores, database, days)
        write_synthetic_history(dataclasses.replace(stores, archive=replica), database, days)
        for day in days:
            key = names.database_key(database, names.VERIFICATION)
            record_check_evaluations(instance, key, names.VERIFYING_CHECKS, day.isoformat())
            key = names.database_key(database, names.REPLICA)
            record_check_evaluations(
                instance, key, (names.REPLICA_VERIFIED,), day.isoformat(), passed=replica_proved
            )

    retention_run(defs, instance)
    newest = {day.isoformat() for day in days[:3]}
    assert stored_days(stores.archive) == stored_days(stores.archive, "langfuse") == newest
    assert stored_days(replica) == {day.isoformat() for day in days[:10]}
    # Without a proved copy in the replica store, nothing there is deleted.
    assert stored_days(replica, "langfuse") == {day.isoformat() for day in days}
