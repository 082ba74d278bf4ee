"""What the tests share besides fixtures: the test passwords, configuration URLs, running a
backup as the UI would, and comparing restored data with its source."""

import contextlib
import datetime as dt
import hashlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest
from azure.storage.blob import BlobServiceClient
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    build_sensor_context,
    materialize,
)
from google.cloud import storage as gcs
from psycopg import sql

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.servers.pgbackrest import repository_from_config
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.alerts.state import AlertState
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines_demo.cluster import LocalCluster, archive_with_pgbackrest

# Distinctive, so a test can search every log line and event for it.
BACKUP_PASSWORD = "Pw-7qZ1x-never-print-me"
RESTORE_TEST_PASSWORD = "Rt-4kP9w-never-print-me"
TEST_DATABASES = ("agentic", "langfuse")


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def yesterday() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def backup_url(cluster: LocalCluster, database: str) -> str:
    return cluster.url(database, user="backup", password="${TEST_BACKUP_PASSWORD}")


def scratch_url(cluster: LocalCluster) -> str:
    return cluster.url("postgres", user="restore_tester", password="${TEST_RESTORE_PASSWORD}")


def config_document(
    cluster: LocalCluster,
    storage: dict | None = None,
    databases: dict | None = None,
    **extra: dict,
) -> dict:
    """A configuration for the session's server: local storage, the test databases, the
    restore tester's scratch URL; passwords as ${TEST_...} references."""
    return {
        "storage": storage or {"local": {"path": "./backups"}},
        "databases": databases
        or {name: {"url": backup_url(cluster, name)} for name in TEST_DATABASES},
        **extra,
        "restore_test": {"url": scratch_url(cluster), **extra.get("restore_test", {})},
    }


def definitions_for(config_path: Path) -> Definitions:
    return build_definitions(load_config(config_path), str(config_path))


def run_backup(
    defs: Definitions,
    instance: DagsterInstance,
    day: str | None = None,
    steps: tuple[str, ...] = names.BACKUP_STEPS,
    databases: tuple[str, ...] = TEST_DATABASES,
) -> ExecuteInProcessResult:
    """Materialize the chosen steps of the chosen databases for one day, as the UI would."""
    return materialize(
        assets=list(defs.assets or []),
        selection=[names.database_key(db, step) for db in databases for step in steps],
        partition_key=day or today(),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def materialization(
    result: ExecuteInProcessResult, database: str, step: str
) -> AssetMaterialization:
    """The one materialization of postgres/<database>/<step> in `result`."""
    key = names.database_key(database, step)
    (found,) = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == key
    ]
    return found


def failure_messages(result: ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    )


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


def serve_definitions(program: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    """A Dagster server process (webserver, gRPC code server) for this project's definitions
    on 127.0.0.1:`port`, output discarded."""
    return subprocess.Popen(
        [*program, "-m", "backup_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen, grace: float = 30.0, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds (a loaded machine can
    slow a graceful shutdown); with `group`, its whole process group."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig) if group else process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def production_instance_env(
    cluster: LocalCluster, dagster_database: str, s3_endpoint: str, logs_bucket: str
) -> dict[str, str]:
    """What the production dagster.yaml reads from the environment: Dagster's PostgreSQL (a
    database on the session's server) and the compute-log bucket (on the moto endpoint)."""
    return {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(cluster.port),
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": cluster.superuser_password,
        "DAGSTER_PG_DB": dagster_database,
        "DAGSTER_COMPUTE_LOGS_BUCKET": logs_bucket,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
    }


def restore_test_databases(cluster) -> list[str]:
    with psycopg.connect(cluster.url()) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'restore\\_test\\_%'"
        ).fetchall()
    return [name for (name,) in rows]


def run_restore_test_job(
    defs: Definitions, instance: DagsterInstance, databases=(), partition=None
) -> ExecuteInProcessResult:
    """The restore_test job for one day (default today), on the chosen databases (default all),
    as a launch of it in the UI would run."""
    job = defs.resolve_job_def(names.RESTORE_TEST_JOB)
    return job.execute_in_process(
        partition_key=partition or today(),
        asset_selection=[names.database_key(db, names.RESTORE_TEST) for db in databases] or None,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def record_check_evaluations(
    instance: DagsterInstance, key: AssetKey, checks: tuple[str, ...], day: str, passed: bool = True
) -> None:
    """Evaluations of `checks` on `key` for `day`, recorded as a run would (for history that
    no backup of today could make)."""
    for check in checks:
        instance.report_runless_asset_event(
            AssetCheckEvaluation(asset_key=key, check_name=check, passed=passed, partition=day)
        )


def metadata_number(value: object) -> float:
    """A number from metadata, whether shown as a figure or as text ('1,234')."""
    raw = getattr(value, "value", value)
    return float(str(raw).replace(",", "")) if isinstance(raw, str) else float(raw)


def restore_test_evaluations(result) -> dict[str, object]:
    return {
        event.asset_check_evaluation_data.asset_key.path[1]: event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def target_url(cluster) -> str:
    return cluster.url("postgres", password="${TEST_TARGET_PASSWORD}")


def run_restore(defs, instance, **request):
    request = {"database": "agentic", **request}
    return defs.resolve_job_def("restore_database").execute_in_process(
        run_config={"ops": {"restore_from_archive": {"config": request}}},
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def drop(cluster, name: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class RunbookParser(HTMLParser):
    """Collects the <pre> blocks by class and database, and every external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[tuple[str, str], str] = {}
        self.external: list[str] = []
        self._open: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in {"link", "script", "img", "iframe"} or "src" in attributes:
            self.external.append(tag)
        if tag == "pre":
            subject = attributes.get("data-database") or attributes.get("data-server") or ""
            self._open = (attributes.get("class") or "", subject)
            self.blocks[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.blocks[self._open] += data


def materialize_runbook(defs, instance):
    result = materialize(
        assets=list(defs.assets or []),
        selection=[names.RECOVERY_RUNBOOK],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    return result


class CommandLineWatch:
    """Reads every process's argv from /proc every few milliseconds while it runs."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = secrets
        self.programs_seen: set[str] = set()
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes().split(b"\0")
                except OSError:
                    continue
                program = Path(argv[0].decode(errors="replace")).name
                self.programs_seen.add(program)
                text = b" ".join(argv).decode(errors="replace")
                if any(secret in text for secret in self.secrets):
                    self.leaks.append(text)

    def __enter__(self) -> "CommandLineWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


PITR_PASSWORD_ENV = "TEST_PITR_SUPERUSER_PASSWORD"


def server_document(cluster: LocalCluster, repository: dict, name: str = "main") -> dict:
    """A `servers:` entry for `cluster`: its superuser (password as ${TEST_PITR_…}), its data
    directory and socket, the given pgBackRest repository."""
    return {
        name: {
            "url": cluster.url().replace(cluster.superuser_password, f"${{{PITR_PASSWORD_ENV}}}"),
            "data_directory": str(cluster.data_dir),
            "socket_directory": str(cluster.root),
            "pgbackrest": repository,
        }
    }


def start_archiving(
    cluster: LocalCluster, config: Path, name: str = "main", **database_host: str
) -> None:
    """Make `cluster` archive its WAL into the repository `config` gives server `name` (plus
    any further pgBackRest options of the database host), start it and create the stanza."""
    repository = repository_from_config(load_config(config), name)
    options = {**repository.options, **repository.secrets, **database_host}
    archive_with_pgbackrest(cluster, name, options)
    cluster.start()
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(pytest.MonkeyPatch.context())
        env.setenv(PITR_PASSWORD_ENV, cluster.superuser_password)
        if not database_host:  # through a TLS server the stanza is made by the first backup
            BackupSettings(config_path=str(config)).server_engine(name).create_stanza()


DOCKER = Path(__file__).resolve().parents[1] / "docker"
# The Azure CLI in its own environment (scripts/setup --tests): it pins its own Azure libraries.
AZURE_CLI = Path(__file__).resolve().parents[1] / ".venv" / "azure-cli" / "bin"


def make_certificates(folder: Path, owner: str | None = None) -> Path:
    """docker/make-certificates as compose's `certificates` service runs it, for 127.0.0.1 as
    both the database host and the S3 terminator; keys owned by `owner` if given."""
    owners = {"DATABASE_HOST_OWNER": owner, "WORKER_OWNER": owner} if owner else {}
    subprocess.run(
        [str(DOCKER / "make-certificates"), str(folder), "127.0.0.1", "127.0.0.1"],
        check=True,
        capture_output=True,
        env={**os.environ, **owners},
    )
    return folder


@dataclass
class Cloud:
    """One container or bucket, and its official client's own calls (the tests' second
    opinion: never this project's store code)."""

    kind: str
    storage: dict
    archive_class: str
    listed: Callable[[], dict[str, int]]  # key: size
    download: Callable[[str], bytes]
    upload: Callable[[str, bytes], None]
    storage_class: Callable[[str], str]


def azure_cloud(connection_string: str, monkeypatch) -> Cloud:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
    name = f"backups-{uuid.uuid4().hex[:12]}"
    container = BlobServiceClient.from_connection_string(connection_string).create_container(name)
    return Cloud(
        kind="azure",
        storage={
            "azure": {
                "container": name,
                "prefix": "pg",
                "connection_string": "${AZURE_STORAGE_CONNECTION_STRING}",
                "archive_tier": "Cool",
            }
        },
        archive_class="Cool",
        listed=lambda: {blob.name: blob.size for blob in container.list_blobs()},
        download=lambda key: container.download_blob(key).readall(),
        upload=lambda key, data: container.upload_blob(key, data, overwrite=True),
        storage_class=lambda key: container.get_blob_client(key).get_blob_properties().blob_tier,
    )


def gcs_cloud(endpoint: str) -> Cloud:
    client = gcs.Client(project="test")
    bucket = client.create_bucket(f"backups-{uuid.uuid4().hex[:12]}")
    return Cloud(
        kind="gcs",
        storage={
            "gcs": {
                "bucket": bucket.name,
                "prefix": "pg",
                "project": "test",
                "archive_storage_class": "NEARLINE",
            }
        },
        # The emulator keeps the source's class on a rewrite (real GCS applies the class the
        # rewrite asks for), so on it the archive copy reads back as STANDARD.
        archive_class="STANDARD",
        listed=lambda: {blob.name: blob.size for blob in client.list_blobs(bucket)},
        download=lambda key: bucket.blob(key).download_as_bytes(),
        upload=lambda key, data: bucket.blob(key).upload_from_string(data),
        storage_class=lambda key: bucket.get_blob(key).storage_class,
    )


def alerts_tick(defs: Definitions, instance: DagsterInstance, cursor: str | None = None) -> str:
    """One tick of the alerts sensor, as the daemon runs it; returns its new cursor."""
    sensor = defs.resolve_sensor_def(names.ALERTS_SENSOR)
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
    ) as context:
        result = sensor.evaluate_tick(context)
    return result.cursor


def watching_since(hours: float) -> str:
    """An alerts cursor that has watched for `hours` (so older problems count as new)."""
    then = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat()
    return AlertState(watching_since=then, runs_after=then).to_cursor()
