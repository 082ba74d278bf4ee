"""Named restore points on a real archiving server and pgBackRest repository: a point made
between two batches of rows is archived when the call returns, and a restore to it by name
holds exactly the rows committed before it; bad names are refused before anything is written."""

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas
import psycopg
import pytest
import yaml
from dagster import AssetKey, materialize
from psycopg.conninfo import make_conninfo

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import archiver_status
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.pgbackrest import RecoveryTarget
from backup_pipelines.core.servers.restore import ServerRestoreRequest, restore_server
from backup_pipelines.core.servers.restore_points import MAX_NAME_BYTES, create_restore_point
from backup_pipelines.core.servers.scratch import free_port, stop_copy
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster
from backup_pipelines_tests.support.archiving import archiving_server, https_s3_repository
from backup_pipelines_tests.support.config import (
    PITR_PASSWORD_ENV,
    today,
)
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    materialize_runbook,
)

SERVER = "main"


@pytest.fixture(scope="module")
def archiving(cluster) -> Iterator[tuple[LocalCluster, Path, Path]]:
    with archiving_server(cluster, "restore-points") as made:
        yield made


@pytest.fixture
def env(archiving, monkeypatch) -> Path:
    server, config, _ = archiving
    monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
    monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(config))
    return config


def write_rows(server: LocalCluster, phase: str) -> None:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("INSERT INTO ledger (phase) SELECT %s FROM generate_series(1, 3)", (phase,))


def phases_in(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT phase, count(*) FROM ledger GROUP BY phase").fetchall()
    return dict(rows)


def restored_to(defs, instance, env: Path, server: LocalCluster, name: str, destination: Path):
    """restore_server to restore point `name`, started on a free port: the rows found there
    and the restore's audit metadata. The copy is stopped and removed afterwards."""
    port = free_port()
    request = {"server": SERVER, "restore_point": name, "data_directory": str(destination)}
    result = defs.resolve_job_def(names.RESTORE_SERVER_JOB).execute_in_process(
        run_config={"ops": {"restore_server_to_target": {"config": {**request, "port": port}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    try:
        (audit,) = result.asset_observations_for_node("restore_server_to_target")
        return phases_in(make_conninfo(server.url(), port=str(port))), audit.metadata
    finally:
        engine = BackupSettings(config_path=str(env)).server_engine(SERVER)
        stop_copy(engine, destination, server.bin_dir)
        shutil.rmtree(destination, ignore_errors=True)


def test_a_point_made_between_two_batches_restores_exactly_the_first(env, archiving, instance):
    server, _, home = archiving
    defs = definitions_for(env)
    backup = materialize(
        list(defs.assets),
        selection=[names.server_key(SERVER, names.BASE_BACKUP)],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert backup.success, failure_messages(backup)
    connection = Connection.from_url(SERVER, server.url())
    write_rows(server, "before the point")
    name = f"before-migration-{uuid.uuid4().hex[:6]}"

    point = create_restore_point(
        SERVER, connection, name, requested_by="the tests", note="schema v42"
    )

    # Archived when the call returns: no switch or wait by the caller.
    assert archiver_status(connection).last_archived_wal[8:] >= point.wal_segment[8:]
    assert (point.name, point.requested_by, point.note) == (name, "the tests", "schema v42")
    write_rows(server, "after the point")
    found, _ = restored_to(defs, instance, env, server, name, home / "at-the-point")
    assert found == {"before the point": 3}


@pytest.mark.parametrize(
    ("name", "taken", "expected"),
    [
        ("", set(), "needs a name"),
        (" padded ", set(), "leading or trailing blanks"),
        ("x" * (MAX_NAME_BYTES + 1), set(), f"at most {MAX_NAME_BYTES}"),
        ("é" * 32, set(), f"64 bytes; PostgreSQL allows at most {MAX_NAME_BYTES}"),
        ("release-7", {"release-7"}, "already exists in the recovery window"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(archiving, name, taken, expected):
    server, _, _ = archiving
    connection = Connection.from_url(SERVER, server.url())
    before = archiver_status(connection).current_wal
    with pytest.raises(PitrError, match=expected) as refused:
        create_restore_point(SERVER, connection, name, requested_by="the tests", taken=taken)
    assert f"server {SERVER!r}" in str(refused.value)
    assert archiver_status(connection).current_wal == before  # no point written, no switch


def test_a_server_that_does_not_archive_is_refused(cluster):
    connection = Connection.from_url("plain", cluster.url())
    with pytest.raises(PitrError, match="does not archive its WAL"):
        create_restore_point("plain", connection, "before-upgrade", requested_by="the tests")


def backup_now(defs, instance, kind: str) -> str:
    result = materialize(
        list(defs.assets),
        selection=[names.server_key(SERVER, names.BASE_BACKUP)],
        partition_key=today(),
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {f"pg_server__{SERVER}__base_backup": {"config": {"kind": kind}}}},
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    (backup,) = result.asset_materializations_for_node(f"pg_server__{SERVER}__base_backup")
    return backup.metadata["label"].value


def make_point(defs, instance, name: str):
    return defs.resolve_job_def(names.CREATE_RESTORE_POINT_JOB).execute_in_process(
        run_config={
            "ops": {
                "make_restore_point": {"config": {"server": SERVER, "name": name, "note": "v42"}}
            }
        },
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def test_the_job_records_the_point_and_the_restore_starts_from_the_backup_before_it(
    env, archiving, instance
):
    """Two backups, the point between them: pgBackRest alone would restore the newer backup,
    which ends after the point, and recovery would never meet it."""
    server, _, home = archiving
    defs = definitions_for(env)
    before_point = backup_now(defs, instance, "full")
    write_rows(server, "job: before")
    name = f"release-{uuid.uuid4().hex[:6]}"

    made = make_point(defs, instance, name)

    assert made.success, failure_messages(made)
    (event,) = made.asset_observations_for_node("make_restore_point")
    recorded = {key: value.value for key, value in event.metadata.items()}
    assert recorded["name"] == name and recorded["note"] == "v42"
    assert recorded["event"] == names.RESTORE_POINT_EVENT and "/" in recorded["lsn"]
    write_rows(server, "job: after")
    newest = backup_now(defs, instance, "full")
    assert newest != before_point

    again = make_point(defs, instance, name)
    assert not again.success and "already exists in the recovery window" in failure_messages(again)
    observed = materialize(
        list(defs.assets),
        selection=[names.server_key(SERVER, names.WAL_ARCHIVE)],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert observed.success, failure_messages(observed)
    (archive,) = observed.asset_materializations_for_node(f"pg_server__{SERVER}__wal_archive")
    table = archive.metadata["restore_points"].value
    assert f"| {name} |" in table and recorded["lsn"] in table and "v42" in table

    found, audit = restored_to(defs, instance, env, server, name, home / "at-the-release")
    assert found.get("job: before") == 3 and "job: after" not in found
    assert audit["restored_from_backup"].value == before_point


def test_a_point_older_than_every_kept_backup_is_refused_with_the_reason(env, archiving):
    _, _, home = archiving
    settings = BackupSettings(config_path=str(env))
    request = ServerRestoreRequest(
        RecoveryTarget("name", "long-gone"), home / "never-made", None, None, point_lsn="0/10"
    )
    with pytest.raises(PitrError, match="its WAL has expired, so it cannot be reached"):
        restore_server(
            settings.server_engine(SERVER), settings.server_connection(SERVER), request, None
        )
    assert not (home / "never-made").exists()


def test_a_point_whose_wal_expired_leaves_the_window_and_is_marked_expired_in_the_audit(
    env, archiving, instance, tmp_path
):
    """Retention keeps one full backup: the point made after the older one goes with it."""
    _, _, home = archiving
    document = yaml.safe_load(env.read_text())
    document["servers"][SERVER]["retention"] = {"daily": 1, "weekly": 0, "monthly": 0}
    config = tmp_path / "keep-one-full.yaml"
    config.write_text(yaml.safe_dump(document))
    defs = definitions_for(config)
    backup_now(defs, instance, "full")
    name = f"old-{uuid.uuid4().hex[:6]}"
    assert make_point(defs, instance, name).success
    backup_now(defs, instance, "full")
    pruned = defs.resolve_job_def(names.PRUNE_SERVERS_JOB).execute_in_process(
        run_config={"ops": {"expire_server_backups": {"config": {"dry_run": False}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert pruned.success, failure_messages(pruned)

    observed = materialize(
        list(defs.assets),
        selection=[names.server_key(SERVER, names.WAL_ARCHIVE), AssetKey(names.AUDIT_REPORT)],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert observed.success, failure_messages(observed)
    (archive,) = observed.asset_materializations_for_node(f"pg_server__{SERVER}__wal_archive")
    assert name not in archive.metadata["restore_points"].value
    assert "| yes, from full backup" in archive.metadata["recovery_timeline"].value
    (audit,) = observed.asset_materializations_for_node(names.AUDIT_REPORT)
    assert audit.metadata["restore_points_expired"].value >= 1
    points = pandas.read_csv(next((home / "backups").rglob("restore_points.csv")))
    (row,) = points[points["restore_point"] == name].to_dict("records")
    assert row["status"].startswith("expired: no kept base backup ends before it")
    materialize_runbook(defs, instance)
    runbook = next((home / "backups").rglob("recovery_runbook.html")).read_text()
    assert name not in runbook  # never offered as a target

    refused = defs.resolve_job_def(names.RESTORE_SERVER_JOB).execute_in_process(
        run_config={
            "ops": {
                "restore_server_to_target": {
                    "config": {
                        "server": SERVER,
                        "restore_point": name,
                        "data_directory": str(home / "expired"),
                    }
                }
            }
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not refused.success
    assert "its WAL has expired, so it cannot be reached" in failure_messages(refused)
    assert not (home / "expired").exists()


def test_a_point_on_an_s3_repository_over_https_restores_by_name(
    cluster, https_s3_endpoint, bucket, instance, monkeypatch
):
    repository = https_s3_repository(https_s3_endpoint, bucket)
    with archiving_server(cluster, "restore-points-s3", repository) as (server, config, home):
        monkeypatch.setenv(PITR_PASSWORD_ENV, server.superuser_password)
        defs = definitions_for(config)
        backup_now(defs, instance, "full")
        write_rows(server, "s3: before")
        name = f"s3-release-{uuid.uuid4().hex[:6]}"
        assert make_point(defs, instance, name).success
        write_rows(server, "s3: after")

        found, _ = restored_to(defs, instance, config, server, name, home / "s3-point")

        assert found == {"s3: before": 3}
