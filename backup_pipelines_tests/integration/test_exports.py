"""Data exports against the session's server: the rows asked for with their parents, read back
with pandas and compared with the source; one snapshot; bad requests and limits."""

import csv
import datetime as dt
import io
import json
import threading
import time
import zipfile

import pandas as pd
import psycopg
import pytest
from dagster import AssetObservation

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.core.postgres.export import (
    ExportError,
    ExportLimits,
    read_export_manifest,
    take_export,
    verify_export,
)
from backup_pipelines.core.postgres.export_request import ExportRequest, ExportRequestError
from backup_pipelines.core.retention.prune import delete_objects, plan_exports
from backup_pipelines.defs.records import materialized_at
from backup_pipelines.defs.recovery.audit import exports_table
from backup_pipelines.storage import LocalStore
from backup_pipelines_tests.support.config import BACKUP_PASSWORD
from backup_pipelines_tests.support.runs import definitions_for

DATABASE = "agentic"
LIMITS = ExportLimits(max_rows=1_000_000, max_bytes=1 << 30)


@pytest.fixture
def source(cluster) -> Connection:
    return Connection.from_url(DATABASE, cluster.url(DATABASE))


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "dumps")


def _request(**fields) -> ExportRequest:
    return ExportRequest.model_validate({"database": DATABASE, "requested_by": "alice", **fields})


def _read(store: LocalStore, key: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(store.read_bytes(key)))


def _as_text(cluster, query: str) -> list[list[str]]:
    """Every row of `query`, every value as PostgreSQL writes it as text (NULL as '')."""
    with psycopg.connect(cluster.url(DATABASE)) as conn:
        columns = [c.name for c in conn.execute(f"SELECT * FROM ({query}) q LIMIT 0").description]
        cast = ", ".join(f'"{c}"::text' for c in columns)
        rows = conn.execute(f"SELECT {cast} FROM ({query}) q").fetchall()
    return [[columns[n] for n in range(len(columns))]] + [
        ["" if v is None else v for v in row] for row in rows
    ]


def _csv_rows(archive: zipfile.ZipFile, name: str) -> list[list[str]]:
    return list(csv.reader(io.TextIOWrapper(archive.open(name), encoding="utf-8", newline="")))


def _frame(cluster, query: str, params=()) -> pd.DataFrame:
    with psycopg.connect(cluster.url(DATABASE)) as conn:
        cursor = conn.execute(query, params)
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])


WRITING_CTE = "WITH gone AS (DELETE FROM messages RETURNING id) SELECT * FROM gone"
AGENT_CONVERSATIONS = {
    "tables": [{"table": "public.conversations", "where": "agent_id = :agent"}],
    "queries": [
        {
            "name": "messages_of_agent",
            "sql": "SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.agent_id = :agent ORDER BY m.id",
        }
    ],
    "params": {"agent": {"type": "int", "value": 7}},
    "follow_parents": True,
}


# The same request as run config (a parameter's value is text, converted to its type).
AGENT_CONVERSATIONS_CONFIG = {
    **AGENT_CONVERSATIONS,
    "params": {"agent": {"type": "int", "value": "7"}},
}


def test_a_csv_export_holds_the_rows_asked_for_and_their_parents(cluster, source, store):
    manifest = take_export(source, store, _request(**AGENT_CONVERSATIONS), "e1", LIMITS)
    assert verify_export(store, manifest) == []
    archive = _read(store, manifest.object_key)
    assert sorted(archive.namelist()) == [
        "manifest.json",
        "queries/messages_of_agent.csv",
        "schema.sql",
        "tables/public.agents.csv",
        "tables/public.conversations.csv",
    ]
    # Every row and every value, as PostgreSQL writes them.
    conversations = _csv_rows(archive, "tables/public.conversations.csv")
    expected = _as_text(cluster, "SELECT * FROM conversations WHERE agent_id = 7")
    assert len(conversations) == len(expected) > 1
    assert conversations[0] == expected[0] and sorted(conversations[1:]) == sorted(expected[1:])
    agents = _csv_rows(archive, "tables/public.agents.csv")
    assert agents == _as_text(cluster, "SELECT * FROM agents WHERE id = 7")  # the parent only
    messages = _csv_rows(archive, "queries/messages_of_agent.csv")
    assert messages == _as_text(
        cluster,
        "SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.agent_id = 7 ORDER BY m.id",
    )
    # And as pandas loads them.
    frame = pd.read_csv(archive.open("queries/messages_of_agent.csv"))
    assert frame["tokens"].tolist() == [int(row[4]) for row in messages[1:]]
    schema = archive.read("schema.sql").decode()
    assert "CREATE TABLE public.conversations" in schema and "CREATE TABLE public.agents" in schema
    assert "CREATE TABLE public.messages" not in schema
    inside = read_export_manifest(store, manifest.object_key)
    assert inside.requested_by == "alice"
    assert inside.rows == len(conversations) + len(agents) + len(messages) - 3  # the headers
    counted = {f["name"]: f["rows"] for f in inside.files}
    assert counted["tables/public.agents.csv"] == 1


def test_a_parquet_export_loads_with_its_types(cluster, source, store):
    request = _request(**{**AGENT_CONVERSATIONS, "format": "parquet"})
    manifest = take_export(source, store, request, "e2", LIMITS)
    assert verify_export(store, manifest) == []
    archive = _read(store, manifest.object_key)
    messages = pd.read_parquet(io.BytesIO(archive.read("queries/messages_of_agent.parquet")))
    expected = _frame(
        cluster,
        "SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.agent_id = 7 ORDER BY m.id",
    )
    assert messages.to_dict("records") == expected.to_dict("records")  # every value, typed
    agents = pd.read_parquet(io.BytesIO(archive.read("tables/public.agents.parquet")))
    assert agents["config"].tolist()[0].startswith("{")  # jsonb kept as its text


def test_rows_written_during_the_export_are_not_in_it(cluster, source, store):
    request = _request(
        queries=[
            {"name": "waited", "sql": "SELECT pg_sleep(3) AS waited"},
            {"name": "latest", "sql": "SELECT max(id) AS newest FROM messages"},
        ]
    )
    with psycopg.connect(cluster.url(DATABASE)) as conn:
        (before,) = conn.execute("SELECT max(id) FROM messages").fetchone()
        (sequence_before,) = conn.execute("SELECT last_value FROM messages_id_seq").fetchone()
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(m=take_export(source, store, request, "e3", LIMITS))
    )
    thread.start()
    with psycopg.connect(cluster.url(DATABASE), autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(3)%%' "
            "AND pid <> pg_backend_pid() AND state = 'active'"
        ).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn.execute(
            "INSERT INTO messages (conversation_id, role, content, tokens, created_at) "
            "SELECT min(id), 'user', 'written during the export', 1, now() FROM conversations"
        )
    thread.join(timeout=60)
    with psycopg.connect(cluster.url(DATABASE), autocommit=True) as conn:
        # The session's database is shared: other modules count its rows and its sequence.
        conn.execute("DELETE FROM messages WHERE content = 'written during the export'")
        conn.execute("SELECT setval('messages_id_seq', %s)", (sequence_before,))
    archive = _read(store, result["m"].object_key)
    latest = pd.read_csv(archive.open("queries/latest.csv"))
    assert latest["newest"].tolist() == [before]  # not the row inserted meanwhile


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {
                "queries": [{"name": "q", "sql": "SELECT :id"}],
                "params": {"id": {"type": "int", "value": "abc"}},
            },
            "parameter 'id' is declared int but its value 'abc' is not one",
        ),
        ({"tables": [{"table": "public.nope"}]}, "unknown table 'public.nope'"),
        (
            {"queries": [{"name": "q", "sql": "DELETE FROM messages"}]},
            "query 'q' is not one read-only statement",
        ),
        (
            {"queries": [{"name": "q", "sql": "SELECT 1; DELETE FROM messages"}]},
            "query 'q' is not one read-only statement",
        ),
        (
            {"queries": [{"name": "q", "sql": "SELECT nextval('messages_id_seq')"}]},
            "query q: cannot execute nextval() in a read-only transaction",
        ),
        (
            {"queries": [{"name": "q", "sql": WRITING_CTE}]},
            # PostgreSQL names a statement with a writing CTE by its top: SELECT
            "query q: cannot execute SELECT in a read-only transaction",
        ),
        (
            {"queries": [{"name": "q", "sql": "SELECT * FROM messages WHERE id = :id"}]},
            "query 'q' uses :id, which params does not give",
        ),
    ],
    ids=[
        "wrong_type",
        "unknown_table",
        "not_a_select",
        "two_statements",
        "writing_function",
        "writing_cte",
        "no_param",
    ],
)
def test_a_bad_request_is_refused_and_leaves_nothing(source, store, fields, expected):
    with pytest.raises((ExportRequestError, ExportError)) as error:
        take_export(source, store, _request(**fields), "bad", LIMITS)
    assert expected in str(error.value)
    assert list(store.list_keys("")) == []


def test_limits_refuse_up_front_or_stop_cleanly(source, store):
    small = ExportLimits(max_rows=100, max_bytes=1 << 30)
    with pytest.raises(
        ExportError, match=r"PostgreSQL estimates .* rows, more than exports\.max_rows"
    ):
        take_export(source, store, _request(tables=[{"table": "public.messages"}]), "big", small)
    # unnest of a computed array: the planner guesses 10 rows, there are 5,000.
    unknown = _request(
        queries=[
            {"name": "q", "sql": "SELECT * FROM unnest(array(SELECT generate_series(1, 5000)))"}
        ]
    )
    with pytest.raises(ExportError, match=r"more than exports.max_rows \(100\) rows"):
        take_export(source, store, unknown, "big", small)
    tiny = ExportLimits(max_rows=1_000_000, max_bytes=2_000)
    with pytest.raises(ExportError, match=r"passed exports\.max_bytes"):
        take_export(source, store, _request(tables=[{"table": "public.messages"}]), "big", tiny)
    assert list(store.list_keys("")) == []


def test_readback_catches_a_damaged_export(source, store):
    manifest = take_export(source, store, _request(**AGENT_CONVERSATIONS), "e4", LIMITS)
    path = store.root / manifest.object_key
    data = bytearray(path.read_bytes())
    entry = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("tables/public.agents.csv")
    start = entry.header_offset
    name_length = int.from_bytes(data[start + 26 : start + 28], "little")
    extra_length = int.from_bytes(data[start + 28 : start + 30], "little")
    compressed = start + 30 + name_length + extra_length
    data[compressed + entry.compress_size // 2] ^= 0xFF  # inside the compressed bytes
    path.write_bytes(bytes(data))
    problems = verify_export(store, manifest)
    assert problems and any("public.agents.csv" in p for p in problems)


def test_the_export_data_job_records_a_verified_export_per_partition(write_config, instance):
    config = write_config()
    defs = definitions_for(config)
    export_id = "agentic-20261207T120000Z-ab12"
    instance.add_dynamic_partitions(names.EXPORTS_PARTITIONS, [export_id])
    key = names.database_key(DATABASE, names.EXPORTS)
    op = "__".join(key.path)
    result = defs.resolve_job_def(names.EXPORT_JOB).execute_in_process(
        run_config={"ops": {op: {"config": {**AGENT_CONVERSATIONS_CONFIG, "reason": "audit"}}}},
        partition_key=export_id,
        asset_selection=[key],
        instance=instance,
        resources=defs.resources,
        tags={"dagster/user": "alice@example.com"},
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == names.EXPORT_VERIFIED and check.passed
    (materialization,) = result.get_asset_materialization_events()
    shown = materialization.materialization.metadata
    assert shown["requested_by"].value == "alice@example.com" and shown["reason"].value == "audit"
    stored = stores_from_config(load_config(config)).dumps
    manifest = read_export_manifest(stored, f"exports/{DATABASE}/{export_id}.zip")
    assert manifest.export_id == export_id and manifest.rows > 0
    assert BACKUP_PASSWORD not in json.dumps(manifest.request) + manifest.to_json().decode()

    # Expiry: by when the export was recorded; an object with no record is kept.
    stored.write_bytes(f"exports/{DATABASE}/made-by-hand.zip", b"not recorded")
    made = materialized_at(instance, key)
    assert list(made) == [export_id]
    week = dt.timedelta(days=7)
    assert plan_exports(stored, DATABASE, made, 7, made[export_id] + week).deletions == []
    (expired,) = plan_exports(stored, DATABASE, made, 7, made[export_id] + 2 * week).deletions
    assert expired.objects == (("dumps", f"exports/{DATABASE}/{export_id}.zip"),)
    delete_objects(stores_from_config(load_config(config)), expired)
    assert sorted(stored.list_keys("exports/")) == [f"exports/{DATABASE}/made-by-hand.zip"]

    # The audit: who exported what and when, and (as the prune job records it) when deleted.
    instance.report_runless_asset_event(
        AssetObservation(
            asset_key=key,
            partition=export_id,
            description="retention: deleted",
            metadata={"action": "deleted"},
        )
    )
    (row,) = exports_table(instance, [DATABASE]).to_dict("records")
    assert (row["export_id"], row["requested_by"], row["reason"]) == (
        export_id,
        "alice@example.com",
        "audit",
    )
    assert row["verified"] is True and row["deleted_at"] and row["rows"] == manifest.rows
