"""The manifest's row counts come from the dump stream itself (core/postgres/_rowcount.c as a
pipeline stage): on data built to be hard to count they equal count(*), and a stream the counter
cannot read fails with its own message, the stream passing through unchanged until then."""

import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.common.streams import Pipeline, first_cause
from backup_pipelines.core.postgres.dump import DumpSettings, take_dump
from backup_pipelines.core.postgres.rowcount import (
    read_counts,
    row_counter_command,
    set_data_offsets,
)
from backup_pipelines.storage.local import LocalStore
from backup_pipelines_tests.support.config import today

HARD_DATA = r"""
CREATE SCHEMA "Odd	Schema";
CREATE TABLE texts (id int PRIMARY KEY, body text, raw bytea);
INSERT INTO texts VALUES
  (1, E'line one\nline two\r\nthree', '\x0a000a00'),
  (2, E'tab\there\\and backslash', '\x00'),
  (3, '\N', NULL),
  (4, NULL, '\x5c2e0a'),
  (5, E'\\.', E'\\x0a0a0a'),
  (6, '', '');
-- Rows whose COPY line is 10 or 266 bytes long: their length prefix holds a newline byte.
CREATE TABLE lengths (v text);
INSERT INTO lengths SELECT repeat('x', 9) FROM generate_series(1, 300);
INSERT INTO lengths SELECT repeat('y', 265) FROM generate_series(1, 300);
CREATE TABLE empty_one (id int);
CREATE TABLE "Odd	Schema"."Quoted ""name""
with newline" (id int);
INSERT INTO "Odd	Schema"."Quoted ""name""
with newline" SELECT generate_series(1, 7);
CREATE TABLE "ünïcode" (id int);
INSERT INTO "ünïcode" VALUES (1), (2);
CREATE TABLE measurements (at date, v int) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT date '2025-06-01' + g, g FROM generate_series(1, 400) g;
CREATE MATERIALIZED VIEW big_measurements AS SELECT * FROM measurements WHERE v > 100;
CREATE UNLOGGED TABLE scratch (id int);
INSERT INTO scratch SELECT generate_series(1, 3);
SELECT lo_from_bytea(0, '\x0a0000000a'::bytea);
"""


@pytest.fixture(scope="module")
def hard_database(cluster):
    name = f"hard_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        conn.execute(HARD_DATA)
    yield name
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_counts_from_the_stream_equal_count_star_on_hard_data(cluster, hard_database, tmp_path):
    connection = Connection.from_url(hard_database, cluster.url(hard_database))
    _, manifest = take_dump(connection, LocalStore(tmp_path), today(), DumpSettings())
    counted = {(r.schema, r.name): (r.kind, r.rows) for r in manifest.relation_counts}
    with psycopg.connect(cluster.url(hard_database)) as conn:
        expected = {
            (schema, name): conn.execute(
                sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, name))
            ).fetchone()[0]
            for schema, name in counted
        }
    assert {key: rows for key, (_, rows) in counted.items()} == expected
    assert counted[("public", "lengths")] == ("table", 600)
    assert counted[("public", "texts")] == ("table", 6)
    assert counted[("public", "empty_one")] == ("table", 0)
    assert counted[("Odd\tSchema", 'Quoted "name"\nwith newline')] == ("table", 7)
    assert counted[("public", "ünïcode")] == ("table", 2)
    assert counted[("public", "measurements_2025")] == ("table", 213)
    assert counted[("public", "big_measurements")] == ("materialized view", 300)
    assert counted[("public", "scratch")] == ("table", 3)
    assert ("public", "measurements") not in counted  # a partitioned parent holds no rows


def dump_file(cluster, database: str, folder: Path, *options: str) -> Path:
    path = folder / "plain.dump"
    subprocess.run(
        [str(cluster.bin_dir / "pg_dump"), "-Fc", *options, "-f", str(path), cluster.url(database)],
        check=True,
        capture_output=True,
    )
    return path


def count(stream: bytes, folder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    counts = folder / "rows.tsv"
    done = subprocess.run(row_counter_command(counts), input=stream, capture_output=True)
    return done, counts


def test_the_counter_passes_the_stream_on_unchanged(cluster, hard_database, tmp_path):
    archive = dump_file(cluster, hard_database, tmp_path, "--compress=0").read_bytes()
    done, counts = count(archive, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == archive
    assert read_counts(counts, "utf-8")[("public", "lengths")] == 600


def piped_dump(cluster, database: str, path: Path) -> Path:
    """pg_dump -Fc -Z0 written through a pipe, as the dump step writes it: no data offsets."""
    dump = subprocess.Popen(
        [str(cluster.bin_dir / "pg_dump"), "-Fc", "-Z0", cluster.url(database)],
        stdout=subprocess.PIPE,
    )
    with path.open("wb") as out:
        subprocess.run(["cat"], stdin=dump.stdout, stdout=out, check=True)
    assert dump.wait() == 0
    return path


def differing_bytes(one: bytes, other: bytes) -> list[int]:
    return [at for at, (a, b) in enumerate(zip(one, other, strict=True)) if a != b]


def test_offsets_written_into_a_piped_dump_are_those_pg_dump_writes_to_a_file(
    cluster, hard_database, tmp_path
):
    written = dump_file(cluster, hard_database, tmp_path, "--compress=0").read_bytes()
    piped = piped_dump(cluster, hard_database, tmp_path / "piped.dump")
    # Archive 1.14 (pg_dump 15): after the 5-byte compression integer, the creation time's 7
    # integers of 5 bytes; the two dumps may differ there, and without offsets, in the TOC.
    creation_time = range(16, 51)
    assert any(at not in creation_time for at in differing_bytes(written, piped.read_bytes()))

    set_data_offsets(piped, tmp_path)

    assert all(at in creation_time for at in differing_bytes(written, piped.read_bytes()))


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (
            lambda a: a[:5] + b"\x01\x11" + a[7:],
            "archive version 1.17 is not one this reader knows",
        ),
        (lambda a: a[: len(a) // 2], "the stream ends inside"),
        (lambda a: b"just some bytes", "not a pg_dump custom-format archive"),
    ],
)
def test_a_stream_the_counter_cannot_read_fails_clearly(
    cluster, hard_database, tmp_path, mangle, message
):
    archive = dump_file(cluster, hard_database, tmp_path, "--compress=0").read_bytes()
    done, counts = count(mangle(archive), tmp_path)
    assert done.returncode == 2 and message in done.stderr.decode()
    assert not counts.exists()


def test_data_compressed_inside_pg_dump_is_refused(cluster, hard_database, tmp_path):
    archive = dump_file(cluster, hard_database, tmp_path, "--compress=1").read_bytes()
    done, _ = count(archive, tmp_path)
    assert done.returncode == 2
    assert "compressed inside pg_dump; dump with --compress=0" in done.stderr.decode()


def test_the_stage_that_failed_is_named_not_the_one_whose_pipe_broke(tmp_path):
    """`yes` feeds the counter, which refuses at once; `yes` then dies of a broken pipe."""
    pipeline = Pipeline([("yes", ["yes"]), ("row counter", row_counter_command(tmp_path / "r"))])
    for _ in pipeline.read_chunks():
        pass
    failures = [failure for failure in pipeline.wait() if failure[1] != 0]
    assert [name for name, _, _ in failures] == ["yes", "row counter"]
    name, code, err = first_cause(failures)
    assert (name, code) == ("row counter", 2) and "not a pg_dump custom-format archive" in err
