"""Retention against storage: the hourly sensor's plan, the prune job, and each safety rule."""

import datetime as dt
import json
import signal
import subprocess
import sys
import time

import boto3
import pytest
from dagster import AssetKey, SkipReason, build_sensor_context

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.core.common.subjects import Database
from backup_pipelines.core.retention.policy import BackupStatus, RetentionPolicy, decide
from backup_pipelines.core.retention.prune import delete_objects, object_uris, tombstone_key
from backup_pipelines.defs.recovery.audit import audit_table
from backup_pipelines.defs.retention.jobs import MAX_DELETIONS_PER_RUN, plan_all
from backup_pipelines.names import VERIFYING_CHECKS
from backup_pipelines_tests.support.config import today
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    record_check_evaluations,
    run_backup,
)
from backup_pipelines_tests.support.synthetic_history import (
    synthetic_objects,
    write_synthetic_history,
)

TODAY = dt.datetime.now(dt.UTC).date()
DB = "agentic"
POLICY = {"daily": 7, "weekly": 4, "monthly": 12, "yearly": 0, "min_keep": 3, "dump_days": 2}


def days_back(count: int, start: int = 0) -> list[dt.date]:
    return [TODAY - dt.timedelta(days=n) for n in range(start, start + count)]


def report_verification(instance, outcomes: dict[dt.date, bool]) -> None:
    key = names.database_key(DB, names.VERIFICATION)
    for day, passed in outcomes.items():
        record_check_evaluations(instance, key, VERIFYING_CHECKS, day.isoformat(), passed)


def everything(stores) -> set[str]:
    return {
        store.uri(key)
        for store in (stores.archive, stores.dumps, stores.refs)
        for key in store.list_keys("")
    }


def tick(defs, instance):
    sensor = defs.resolve_sensor_def(names.RETENTION_SENSOR)
    with build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def run_prune(defs, instance, run_config):
    return defs.resolve_job_def("prune_backups").execute_in_process(
        run_config=run_config, instance=instance, resources=defs.resources, raise_on_error=False
    )


def deletions_of(run_config) -> list[dict]:
    return run_config["ops"]["delete_expired_backups"]["config"]["deletions"]


def observations(result) -> list[dict]:
    return [
        {k: v.value for k, v in event.event_specific_data.asset_observation.metadata.items()}
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]


@pytest.fixture
def history(write_config, instance):
    """60 days of backups of agentic: 2 failed, 1 never verified, dumps for the last 5 days."""

    def make(retention=POLICY, storage=None, failed=(3, 10), unverified=(20,), count=60):
        config = write_config(storage=storage, retention=retention)
        stores = stores_from_config(load_config(config))
        days = days_back(count)
        write_synthetic_history(stores, DB, days, dump_days=days[:5])
        bad = {TODAY - dt.timedelta(days=n) for n in failed}
        missing = {TODAY - dt.timedelta(days=n) for n in unverified}
        report_verification(instance, {d: d not in bad for d in days if d not in missing})
        statuses = [BackupStatus(d, None if d in missing else d not in bad) for d in days]
        return definitions_for(config), stores, statuses

    return make


def test_sensor_plans_and_the_prune_job_deletes_exactly_the_plan(history, instance):
    defs, stores, statuses = history()
    (request,) = tick(defs, instance).run_requests
    planned = deletions_of(request.run_config)

    policy = RetentionPolicy(*(POLICY[rule] for rule in ("daily", "weekly", "monthly", "yearly")))
    expired = {d.day.isoformat() for d in decide(statuses, policy) if not d.keep}
    assert {d["partition"] for d in planned if d["scope"] == "backup"} == expired
    assert str(TODAY - dt.timedelta(days=3)) in expired  # failed: counts for nothing
    assert str(TODAY - dt.timedelta(days=20)) in expired  # never verified, older than good ones
    dumps_only = {d["partition"] for d in planned if d["scope"] == "dump"}
    assert dumps_only == {str(TODAY - dt.timedelta(days=n)) for n in (2, 4)}
    for deletion in planned:
        assert deletion["objects"][0].endswith("manifest.json")  # un-committed first
        assert deletion["reason"]

    before = everything(stores)
    listed = {uri for d in planned for uri in d["objects"]}
    tombstones = {d["objects"][-1] for d in planned if d["scope"] == "backup"}
    assert all(
        f"/pruning/{d['partition']}.json" in d["objects"][-1]
        for d in planned
        if d["scope"] == "backup"
    )
    assert listed - tombstones <= before  # a tombstone is written when its deletion begins
    result = run_prune(defs, instance, request.run_config)
    assert result.success, failure_messages(result)
    assert everything(stores) == before - listed
    records = observations(result)
    assert len(records) == len(planned) and {r["action"] for r in records} == {"deleted"}
    assert any(r["reason"].startswith("no rule keeps it: it is not the newest") for r in records)
    # The audit report shows each retention decision on its day.
    table = audit_table(instance, [DB], TODAY - dt.timedelta(days=59), TODAY)
    notes = dict(zip(table["day"], table["retention"], strict=True))
    for day in expired:
        assert notes[day].startswith("archive: deleted (")

    assert isinstance(tick(defs, instance), SkipReason) or not tick(defs, instance).run_requests


def test_dry_run_reports_and_deletes_nothing(history, instance):
    defs, stores, _ = history(retention={**POLICY, "dry_run": True})
    (request,) = tick(defs, instance).run_requests
    before = everything(stores)
    result = run_prune(defs, instance, request.run_config)
    assert result.success, failure_messages(result)
    assert everything(stores) == before
    assert {r["action"] for r in observations(result)} == {"dry run: would delete"}


def test_fewer_verified_backups_than_min_keep_deletes_nothing(history, instance):
    defs, _, _ = history(failed=range(2, 60), unverified=())
    result = tick(defs, instance)
    assert not result.run_requests
    assert "nothing expired" in result.skip_message
    (plan, _) = plan_all(defs.resources["settings"], instance)
    assert all("fewer than min_keep 3" in why[0] for why in plan.kept.values() if why)


def test_prune_job_only_deletes_what_the_policy_still_expires(history, write_config, instance):
    defs, stores, _ = history()
    (request,) = tick(defs, instance).run_requests
    deletions = deletions_of(request.run_config)
    # The operator raises min_keep above the verified backups before the run starts: now the
    # policy deletes nothing, so the run may delete nothing.
    defs = definitions_for(write_config(retention={**POLICY, "min_keep": 100}))
    before = everything(stores)
    result = run_prune(defs, instance, request.run_config)
    assert result.success, failure_messages(result)
    assert everything(stores) == before
    actions = {r["action"] for r in observations(result)}
    assert actions <= {"skipped: the retention policy keeps it now"}
    assert len(observations(result)) == len(deletions)


def test_changed_objects_are_not_deleted_until_planned_again(history, instance):
    defs, stores, _ = history()
    (request,) = tick(defs, instance).run_requests
    victim = next(d for d in deletions_of(request.run_config) if d["scope"] == "backup")
    stores.archive.write_bytes(f"{DB}/{victim['partition']}/late_arrival.bin", b"new")
    result = run_prune(defs, instance, request.run_config)
    assert result.success, failure_messages(result)
    assert stores.archive.exists(f"{DB}/{victim['partition']}/manifest.json")
    assert "objects changed" in " ".join(r["action"] for r in observations(result))


def test_a_dump_without_archive_is_kept_and_incomplete_objects_go(history, instance):
    defs, stores, _ = history(count=10)
    lonely = TODAY - dt.timedelta(days=30)
    write_synthetic_history(stores, DB, [], dump_days=[lonely])
    broken = TODAY - dt.timedelta(days=31)
    dump_key, _ = synthetic_objects(DB, broken)
    stores.archive.write_bytes(dump_key, b"no manifest: an interrupted copy")
    (plan, _) = plan_all(defs.resources["settings"], instance)
    assert plan.kept[lonely.isoformat()] == ("dump without an archive copy: the only copy",)
    (incomplete,) = [d for d in plan.deletions if d.scope == "incomplete"]
    assert incomplete.day == broken.isoformat() and incomplete.objects == (("archive", dump_key),)


def test_pruning_a_really_verified_day_records_it_on_the_asset(write_config, instance, cluster):
    config = write_config(retention={"daily": 3, "weekly": 0, "monthly": 0, "min_keep": 1})
    defs = definitions_for(config)
    assert run_backup(defs, instance, databases=(DB,)).success
    stores = stores_from_config(load_config(config))
    old = TODAY - dt.timedelta(days=40)
    # Yesterday's real archive appears on an old day: verification runs on it for real.
    manifest = json.loads(stores.archive.read_bytes(f"{DB}/{today()}/manifest.json"))
    dump_key, manifest_key = synthetic_objects(DB, old)
    stores.archive.copy_from(stores.archive, manifest["object_key"], dump_key)
    manifest.update(partition=old.isoformat(), object_key=dump_key)
    stores.archive.write_bytes(manifest_key, json.dumps(manifest).encode())
    ref = json.loads(stores.refs.read_bytes(f"postgres/{DB}/archive/{today()}.json"))
    ref.update(partition=old.isoformat(), object_key=dump_key, uri=stores.archive.uri(dump_key))
    stores.refs.write_bytes(f"postgres/{DB}/archive/{old}.json", json.dumps(ref).encode())
    verified = run_backup(
        defs, instance, day=old.isoformat(), steps=("verification",), databases=(DB,)
    )
    assert verified.success, failure_messages(verified)
    key = names.database_key(DB, names.VERIFICATION)
    assert old.isoformat() in instance.get_materialized_partitions(key)
    recent = days_back(2, start=1)  # daily 3 keeps these and today
    write_synthetic_history(stores, DB, recent)
    report_verification(instance, dict.fromkeys(recent, True))

    (request,) = tick(defs, instance).run_requests
    assert [d["partition"] for d in deletions_of(request.run_config)] == [old.isoformat()]
    result = run_prune(defs, instance, request.run_config)
    assert result.success, failure_messages(result)
    assert not stores.archive.exists(dump_key)
    (event,) = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    observation = event.event_specific_data.asset_observation
    assert observation.asset_key == AssetKey(["postgres", DB, "archive"])
    assert observation.partition == old.isoformat()
    assert observation.metadata["action"].value == "deleted"
    assert stores.archive.exists(f"{DB}/{today()}/manifest.json")


def test_archives_under_object_lock_are_not_attempted(history, s3_endpoint, instance):
    bucket = f"locked-{int(time.time() * 1000)}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    defs, stores, _ = history(storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}})
    (plan, _) = plan_all(defs.resources["settings"], instance)
    victim = next(d for d in plan.deletions if d.scope == "backup")
    dump_key = next(key for store, key in victim.objects if key.endswith(".zst"))
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    s3.put_object_retention(
        Bucket=bucket,
        Key=stores.archive.full_key(dump_key),
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
    )
    (plan, _) = plan_all(defs.resources["settings"], instance)
    assert victim.day not in {d.day for d in plan.deletions if d.scope == "backup"}
    assert plan.kept[victim.day][-1] == f"object lock until {until:%Y-%m-%d}"


def test_one_prune_run_takes_at_most_its_share_of_a_long_history(write_config, instance):
    """Just over MAX_DELETIONS_PER_RUN expired days (the sensor's speed at 20,000 objects on S3
    is benchmarks/retention_planning.py's)."""
    config = write_config()
    defs = definitions_for(config)
    stores = stores_from_config(load_config(config))
    days = days_back(MAX_DELETIONS_PER_RUN + 150)
    write_synthetic_history(stores, DB, days, threads=32)  # 4 objects a day
    report_verification(instance, dict.fromkeys(days[:400], True))
    (request,) = tick(defs, instance).run_requests
    planned = deletions_of(request.run_config)
    assert len(planned) == MAX_DELETIONS_PER_RUN  # the next tick plans the rest
    assert all(d["scope"] == "backup" for d in planned)


# A prune process that dies (SIGKILL) before its deletion number `survive` + 1: the crash a
# power cut or an OOM kill causes. The stores are the real local folders.
KILLED_PRUNE = """
import json, os, signal, sys
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.core.common.subjects import Database
from backup_pipelines.core.retention.prune import Deletion, delete_objects
from backup_pipelines.storage import LocalStore

config, planned, survive = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
really_delete, done = LocalStore.delete, []

def delete_or_die(store, key):
    if len(done) == survive:
        os.kill(os.getpid(), signal.SIGKILL)
    done.append(key)
    really_delete(store, key)

LocalStore.delete = delete_or_die
objects = tuple(tuple(pair) for pair in planned.pop("objects"))
subject = Database(planned.pop("database"))
delete_objects(
    stores_from_config(load_config(config)), Deletion(subject, **planned, objects=objects)
)
"""


def test_a_prune_killed_between_any_two_deletions_is_finished_by_the_next(history, instance):
    defs, stores, _ = history(count=40)
    settings = defs.resources["settings"]
    (plan,) = plan_all(settings, instance, [Database(DB)])
    victim = next(  # day 3 failed its verification and still has its dump: 7 objects
        d for d in plan.deletions if d.scope == "backup" and any(n == "dumps" for n, _ in d.objects)
    )
    before = everything(stores)
    expired = {uri for d in plan.deletions for uri in object_uris(stores, d)}
    for survive in range(len(victim.objects)):
        if survive:  # the previous round deleted the expired days: write them again
            write_synthetic_history(stores, DB, days_back(40), dump_days=days_back(5))
        assert everything(stores) == before
        fields = {"day": victim.day, "scope": victim.scope, "reason": victim.reason}
        planned = json.dumps({**fields, "database": DB, "objects": victim.objects})
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_PRUNE, settings.config_path, planned, str(survive)],
            capture_output=True,
            text=True,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert stores.refs.exists(tombstone_key(DB, victim.day))

        (replan,) = plan_all(settings, instance, [Database(DB)])
        assert victim.day not in replan.kept  # never "the only copy"
        (finishing,) = [d for d in replan.deletions if d.day == victim.day]
        assert finishing.scope == "backup" and "interrupted" in finishing.reason
        assert {(d.day, d.scope) for d in replan.deletions} == {
            (d.day, d.scope) for d in plan.deletions
        }
        for deletion in replan.deletions:
            delete_objects(stores, deletion)
        assert everything(stores) == before - expired, f"killed after {survive} deletions"


def test_prune_on_azure_and_gcs_deletes_exactly_the_plan(history, cloud, instance):
    defs, stores, _ = history(storage=cloud.storage, count=21)
    (request,) = tick(defs, instance).run_requests
    planned = deletions_of(request.run_config)
    tombstones = {d["objects"][-1] for d in planned if d["scope"] == "backup"}
    doomed = {uri for d in planned for uri in d["objects"]} - tombstones
    assert doomed

    before, before_as_uris = set(cloud.listed()), everything(stores)
    result = run_prune(defs, instance, request.run_config)
    assert result.success, failure_messages(result)
    # The container's own listing, not this project's: exactly the planned objects are gone.
    gone = before - set(cloud.listed())
    assert len(gone) == len(doomed)
    assert all(any(uri.endswith(f"/{key}") for uri in doomed) for key in gone)
    assert everything(stores) == before_as_uris - doomed - tombstones
