"""Bad input fails clearly, names the database or key, leaves no backup-looking object, and
never shows the password."""

import boto3
import psycopg
import pytest

from backup_pipelines_demo.cluster import free_port
from backup_pipelines_tests.support.config import BACKUP_PASSWORD
from backup_pipelines_tests.support.runs import definitions_for, failure_messages, run_backup


def assert_secret_absent(result, instance) -> None:
    for record in instance.all_logs(result.run_id):
        assert BACKUP_PASSWORD not in str(record)
    assert BACKUP_PASSWORD not in str(instance.get_run_by_id(result.run_id))


def backed_up_objects(config) -> list[str]:
    root = config.parent / "backups"
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def run_one(write_config, instance, url: str):
    config = write_config(databases={"agentic": {"url": url}})
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert not result.success
    assert_secret_absent(result, instance)
    assert backed_up_objects(config) == []
    return failure_messages(result)


def test_unreachable_server(write_config, instance):
    port = free_port()  # nothing listens there
    message = run_one(
        write_config,
        instance,
        f"postgresql://backup:${{TEST_BACKUP_PASSWORD}}@127.0.0.1:{port}/agentic",
    )
    assert f"database 'agentic' at 127.0.0.1:{port}" in message
    assert "refused" in message.lower() or "could not connect" in message.lower()


@pytest.fixture(scope="module")
def unprivileged_role(cluster) -> str:
    """A role that may log in but was not granted pg_read_all_data."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS weak")
        admin.execute(f"CREATE ROLE weak LOGIN PASSWORD '{BACKUP_PASSWORD}'")
    return "weak"


@pytest.mark.parametrize(
    ("user", "dbname", "password", "expected"),
    [
        ("backup", "agentic", "${WRONG_PASSWORD}", "password authentication failed"),
        ("backup", "no_such_db", "${TEST_BACKUP_PASSWORD}", '"no_such_db" does not exist'),
        ("weak", "agentic", "${TEST_BACKUP_PASSWORD}", "permission denied"),
        ("backup", "agentic", "${NOT_SET_ANYWHERE}", "NOT_SET_ANYWHERE is not set"),
    ],
    ids=["wrong password", "missing database", "no read privilege", "unset variable"],
)
def test_bad_database_settings(
    write_config,
    instance,
    cluster,
    monkeypatch,
    unprivileged_role,
    user,
    dbname,
    password,
    expected,
):
    monkeypatch.setenv("WRONG_PASSWORD", BACKUP_PASSWORD + "-wrong")
    message = run_one(write_config, instance, cluster.url(dbname, user=user, password=password))
    assert expected in message
    assert "database 'agentic'" in message or "databases.agentic.url" in message


def test_missing_bucket(write_config, instance, s3_endpoint, cluster):
    config = write_config(
        storage={"s3": {"bucket": "no-such-bucket-here", "endpoint_url": s3_endpoint}},
        databases={
            "agentic": {
                "url": cluster.url("agentic", user="backup", password="${TEST_BACKUP_PASSWORD}")
            }
        },
    )
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert not result.success
    assert "bucket 'no-such-bucket-here' does not exist" in failure_messages(result)
    assert_secret_absent(result, instance)


def test_failed_dump_leaves_no_object_in_s3(
    write_config, instance, s3_endpoint, bucket, cluster, unprivileged_role
):
    config = write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
        databases={
            "agentic": {
                "url": cluster.url(
                    "agentic", user=unprivileged_role, password="${TEST_BACKUP_PASSWORD}"
                )
            }
        },
    )
    result = run_backup(definitions_for(config), instance, databases=("agentic",))
    assert not result.success
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_process_list_never_shows_the_password(write_config, instance, cluster):
    """pg_dump gets the password from its environment: argv is visible to every user."""
    import subprocess
    import threading

    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(
                subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_backup(definitions_for(write_config()), instance, steps=("dump",))
    finally:
        stop.set()
        watcher.join()
    assert result.success
    if not any("pg_dump" in listing for listing in seen):
        pytest.skip("the dump finished before ps saw it")
    assert not any(BACKUP_PASSWORD in listing for listing in seen)
    assert_secret_absent(result, instance)
