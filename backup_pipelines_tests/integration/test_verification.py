"""Checks that must fail when a backup is bad: missing table data, wrong sizes, anomalies."""

import dataclasses
import os
import subprocess

from backup_pipelines.core.common.client_tools import find_client_tools
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.postgres.dump import DumpSettings, take_dump
from backup_pipelines.core.postgres.verification import check_dump_complete, recent_sizes
from backup_pipelines.storage import LocalStore
from backup_pipelines_tests.support.config import BACKUP_PASSWORD, today


def dump_today(cluster, store):
    connection = Connection.from_url(
        "agentic", cluster.url("agentic", user="backup", password=BACKUP_PASSWORD)
    )
    return connection, *take_dump(connection, store, today(), DumpSettings())


def test_dump_lacking_a_tables_data_fails_and_names_it(cluster, tmp_path):
    store = LocalStore(tmp_path)
    connection, ref, manifest = dump_today(cluster, store)
    tools = find_client_tools(None)
    assert check_dump_complete(store, ref, manifest, tools).passed

    # The same database dumped without one table's rows, in the same compressed format.
    lacking = subprocess.run(
        f"{tools.program('pg_dump')} -Fc -Z0 --exclude-table-data=public.messages "
        f'-d "{connection.dsn}" | zstd -q -c',
        shell=True,
        check=True,
        capture_output=True,
        env={**os.environ, "PGPASSWORD": BACKUP_PASSWORD},
    ).stdout
    store.write_bytes(ref.object_key, lacking)
    outcome = check_dump_complete(
        store, ref, dataclasses.replace(manifest, size_bytes=len(lacking)), tools
    )
    assert not outcome.passed
    assert "public.messages" in outcome.description
    assert outcome.metadata["relations_missing_data"] == ["public.messages"]


def test_the_dump_names_its_database_and_a_look_alike_is_refused(cluster, tmp_path):
    store = LocalStore(tmp_path)
    _, ref, manifest = dump_today(cluster, store)
    tools = find_client_tools(None)
    assert manifest.source_database == "agentic"
    passed = check_dump_complete(store, ref, manifest, tools, configured_name="agentic")
    assert passed.passed and passed.metadata["dumped_database"] == "agentic"
    # The same dump checked as the backup of a database whose URL names another one.
    refused = check_dump_complete(store, ref, manifest, tools, configured_name="langfuse")
    assert not refused.passed
    assert "dumped from database 'agentic'" in refused.description
    assert "names 'langfuse'" in refused.description
    # A manifest that claims another source than the archive's header.
    claimed = dataclasses.replace(manifest, source_database="langfuse")
    mismatch = check_dump_complete(store, ref, claimed, tools)
    assert not mismatch.passed and "its manifest records 'langfuse'" in mismatch.description
    # Manifests written before the field existed still verify.
    legacy = dataclasses.replace(manifest, source_database=None)
    assert check_dump_complete(store, ref, legacy, tools).passed


def test_dump_of_wrong_size_or_garbage_fails(cluster, tmp_path):
    store = LocalStore(tmp_path)
    _, ref, manifest = dump_today(cluster, store)
    tools = find_client_tools(None)
    store.write_bytes(ref.object_key, b"")
    assert not check_dump_complete(store, ref, manifest, tools).passed
    garbage = b"not a dump at all" * 100
    store.write_bytes(ref.object_key, garbage)
    outcome = check_dump_complete(
        store, ref, dataclasses.replace(manifest, size_bytes=len(garbage)), tools
    )
    assert not outcome.passed and "cannot read" in outcome.description


def test_manifest_counts_rows_of_the_snapshot(cluster, tmp_path):
    _, _, manifest = dump_today(cluster, LocalStore(tmp_path))
    rows = {r["name"]: r["rows"] for r in manifest.relations}
    assert rows["messages"] == 4000 and rows["agents"] == 20
    assert rows["agent_usage"] > 0  # the materialized view's data counts too
    assert manifest.sequences["public.messages_id_seq"] == 4000


def test_recent_sizes_read_earlier_manifests_only(cluster, tmp_path):
    store = LocalStore(tmp_path)
    _, _, manifest = dump_today(cluster, store)
    for day, size in (("2026-01-01", 10), ("2026-01-02", 20), ("2026-01-03", 30)):
        store.write_bytes(
            f"agentic/{day}/manifest.json",
            dataclasses.replace(manifest, partition=day, size_bytes=size).to_json(),
        )
    assert recent_sizes(store, "agentic", "2026-01-03", 7) == [10, 20]
    assert recent_sizes(store, "agentic", today(), 2) == [20, 30]
