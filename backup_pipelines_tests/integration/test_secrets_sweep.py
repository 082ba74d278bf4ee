"""The distinctive passwords and the encryption key never show: an encrypted backup, a restore
test and a failing backup run as real `dagster job execute` processes, then every event, log
line, metadata value, error and stored file is searched for them, and so is every process's
command line while they ran."""

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)
from dagster import DagsterInstance
from dagster._serdes import serialize_value

from backup_pipelines import names
from backup_pipelines_tests.support.clouds import azure_cloud
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    RESTORE_TEST_PASSWORD,
    backup_url,
    today,
)
from backup_pipelines_tests.support.emulators import AZURITE_ACCOUNT_KEY
from backup_pipelines_tests.support.processes import CommandLineWatch


def new_age_identity() -> str:
    generated = subprocess.run(["age-keygen"], check=True, capture_output=True, text=True).stdout
    return next(line for line in generated.splitlines() if line.startswith("AGE-SECRET-KEY-"))


def dagster_cli(home: Path, config: Path, *command: str) -> subprocess.CompletedProcess:
    dagster = str(Path(sys.executable).parent / "dagster")
    return subprocess.run(
        [dagster, *command, "-m", "backup_pipelines.definitions"],
        env={**os.environ, "DAGSTER_HOME": str(home), "BACKUP_PIPELINES_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def files_containing(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@dataclass
class SweptStore:
    storage: dict | None
    secrets: tuple[str, ...]
    stored_files: Callable[[Path], list[bytes]]


def local_files(config_folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in (config_folder / "backups").rglob("*") if p.is_file()]


@pytest.fixture(params=["local", "azure-sas"])
def swept_store(request, monkeypatch) -> SweptStore:
    if request.param == "local":
        return SweptStore(None, (), local_files)
    # A SAS token: the kind of secret that rides in request URLs.
    cloud = azure_cloud(request.getfixturevalue("azurite"), monkeypatch)
    service = BlobServiceClient.from_connection_string(request.getfixturevalue("azurite"))
    token = generate_account_sas(
        service.account_name,
        AZURITE_ACCOUNT_KEY,
        ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    monkeypatch.setenv("TEST_AZURE_SAS", token)
    settings = {**cloud.storage["azure"], "account_url": service.url.rstrip("/")}
    del settings["connection_string"]
    settings["sas_token"] = "${TEST_AZURE_SAS}"
    signature = parse_qs(token)["sig"][0]
    return SweptStore(
        {"azure": settings},
        (token, signature, AZURITE_ACCOUNT_KEY),
        lambda _: [cloud.download(key) for key in cloud.listed()],
    )


def test_no_secret_in_events_logs_metadata_errors_files_or_argv(
    write_config, cluster, tmp_path, monkeypatch, swept_store
):
    identity = new_age_identity()
    secrets = (BACKUP_PASSWORD, RESTORE_TEST_PASSWORD, identity, *swept_store.secrets)
    monkeypatch.setenv("TEST_AGE_IDENTITY", identity)
    config = write_config(
        storage=swept_store.storage,
        encryption={"identity": "${TEST_AGE_IDENTITY}"},
        databases={
            "agentic": {"url": backup_url(cluster, "agentic")},
            # Same role and password, a database that does not exist: the failure case.
            "vanished": {"url": backup_url(cluster, "vanished_database")},
        },
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    tags = json.dumps({"dagster/partition": today()})
    with CommandLineWatch(secrets) as watch:
        backup = dagster_cli(home, config, "job", "execute", "-j", "daily_backup", "--tags", tags)
        restore_test = dagster_cli(
            home,
            config,
            "asset",
            "materialize",
            "--select",
            "postgres/agentic/restore_test",
            "--partition",
            today(),
        )
    assert backup.returncode != 0  # 'vanished' failed ...
    assert restore_test.returncode == 0, restore_test.stderr[-3000:]  # ... agentic did not
    assert {"pg_dump", "pg_restore", "age"} <= watch.programs_seen  # the watch saw the children
    assert watch.leaks == []

    instance = DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert len(runs) == 2
        events = [event for run in runs for event in instance.all_logs(run.run_id)]
        failures = [e for e in events if e.dagster_event and e.dagster_event.is_step_failure]
        assert any(
            "vanished_database" in str(e.dagster_event.step_failure_data.error) for e in failures
        )
        checks = [
            e.dagster_event.asset_check_evaluation_data
            for e in events
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert any(c.check_name == names.RESTORED_DATA_MATCHES and c.passed for c in checks)
        serialized = "\n".join(serialize_value(event) for event in events)
        serialized += "\n".join(serialize_value(run) for run in runs)
    finally:
        instance.dispose()

    for secret in secrets:
        assert secret not in serialized  # events, metadata, errors, run config, tags
        for output in (backup, restore_test):
            assert secret not in output.stdout + output.stderr  # every log line printed
        assert files_containing(home, secret) == []  # event log DB, compute logs
        stored = swept_store.stored_files(config.parent)  # manifests, refs, dumps
        assert stored and not any(secret.encode() in content for content in stored)
