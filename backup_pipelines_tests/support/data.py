"""Comparing restored data with its source, and the databases a test leaves behind."""

import hashlib
import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from backup_pipelines_demo.cluster import LocalCluster


def table_fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """Every user table's row count and a hash of all its rows, in a stable order."""
    fingerprints = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                "FROM {}.{} t"
            ).format(sql.Identifier(schema), sql.Identifier(table))
            fingerprints[f"{schema}.{table}"] = tuple(conn.execute(query).fetchone())
    return fingerprints


def restore_into_new_database(cluster: LocalCluster, archive: Path, name: str) -> str:
    """Restore an archive file by hand, as the README tells an operator to."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {
        **os.environ,
        "PGPASSWORD": cluster.superuser_password,
        "TARGET": cluster.url(name, password=""),
    }
    subprocess.run(
        f"zstd -dc '{archive}' | pg_restore --no-owner --exit-on-error -d \"$TARGET\"",
        shell=True,
        check=True,
        env=env,
    )
    return cluster.url(name)


def restore_test_databases(cluster) -> list[str]:
    with psycopg.connect(cluster.url()) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'restore\\_test\\_%'"
        ).fetchall()
    return [name for (name,) in rows]


def drop(cluster, name: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
