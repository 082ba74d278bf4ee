"""docker/: no Docker engine runs here, so the files are checked for what `docker compose up`
relies on: they parse, every variable has a value, the services are wired to each other,
the backup configuration and definitions load, and the sample-data step works on a real
server."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from backup_pipelines.core.config import load_config
from backup_pipelines.definitions import build_definitions
from backup_pipelines_tests.helpers import BACKUP_PASSWORD, RESTORE_TEST_PASSWORD

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
APP_SERVICES = {"sample-data", "user-code", "webserver", "daemon", "trigger", "first-backup"}
_COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::[?-][^}]*)?\}")
_ENV_REFERENCE = re.compile(r"\{env: (\w+)\}")


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory) -> dict[str, str]:
    """docker/.env as ./generate-env writes it (in a copy of the folder)."""
    folder = tmp_path_factory.mktemp("docker")
    shutil.copy(DOCKER / "generate-env", folder / "generate-env")
    subprocess.run([str(folder / "generate-env")], check=True, capture_output=True)
    env_file = folder / ".env"
    first = env_file.read_text()
    subprocess.run([str(folder / "generate-env")], check=True, capture_output=True)
    assert env_file.read_text() == first  # an existing .env is kept
    assert env_file.stat().st_mode & 0o777 == 0o600
    return dict(line.split("=", 1) for line in first.splitlines() if line)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:?message}, ${VAR:-default}, $$."""

    def value(match: re.Match[str]) -> str:
        name, whole = match.group(1), match.group(0)
        if name in env:
            return env[name]
        if ":-" in whole:
            return whole.split(":-", 1)[1][:-1]
        raise AssertionError(f"compose needs {name}, which docker/.env does not set")

    return _COMPOSE_VARIABLE.sub(value, text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose(dotenv) -> dict:
    return yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), dotenv))


def test_every_service_the_issue_names_is_there_and_wired(compose):
    services = compose["services"]
    assert {"webserver", "daemon", "user-code", "dagster-postgres", "minio", "sample-postgres"} <= (
        set(services)
    )
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["image"] == "backup_pipelines:latest"

    env = services["user-code"]["environment"]
    grpc = services["user-code"]["command"]
    assert grpc[:3] == ["dagster", "api", "grpc"]
    assert grpc[grpc.index("-p") + 1] == env["BACKUP_PIPELINES_CODE_PORT"]
    assert env["BACKUP_PIPELINES_CODE_HOST"] == "user-code"
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        workspace = command[command.index("-w") + 1]
        assert workspace == "docker/workspace.grpc.yaml" and (REPO / workspace).is_file()
        assert services[name]["depends_on"]["user-code"]["condition"] == "service_healthy"

    # The instance (dagster.yaml, the image's DAGSTER_HOME) finds its PostgreSQL.
    for variable in _ENV_REFERENCE.findall((REPO / "dagster.yaml").read_text()):
        assert variable in env, variable
    database = services["dagster-postgres"]["environment"]
    assert env["DAGSTER_PG_HOST"] == "dagster-postgres"
    assert (env["DAGSTER_PG_USER"], env["DAGSTER_PG_PASSWORD"], env["DAGSTER_PG_DB"]) == (
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
        database["POSTGRES_DB"],
    )
    for service in services.values():  # nothing listens beyond this host unless chosen
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", []))
    setup = " ".join(services["minio-setup"]["command"])
    assert "mc mb --ignore-existing --with-lock store/backups" in setup
    # Dagster's compute logs: the bucket the instance names is the one the setup creates.
    assert f"mc mb --ignore-existing store/{env['DAGSTER_COMPUTE_LOGS_BUCKET']}" in setup
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_the_compose_backup_configuration_loads_and_builds_definitions(compose, monkeypatch):
    env = compose["services"]["user-code"]["environment"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_config(DOCKER / "backup_pipelines.yaml")
    services = compose["services"]
    assert config.storage.s3.endpoint_url == "http://minio:9000" and "minio" in services
    assert config.storage.s3.object_lock.mode == "GOVERNANCE"
    for name, database in config.databases.items():
        url = os.path.expandvars(database.url.replace("${", "$").replace("}", ""))
        assert "@sample-postgres:5432/" in url and env["BACKUP_PASSWORD"] in url, name
    mounted = services["user-code"]["volumes"]
    assert "./backup_pipelines.yaml:/etc/backup_pipelines.yaml:ro" in mounted
    assert env["BACKUP_PIPELINES_CONFIG"] == "/etc/backup_pipelines.yaml"

    definitions = build_definitions(config, "/etc/backup_pipelines.yaml")
    assert {"daily_backup", "restore_test", "restore_database"} <= {
        job.name for job in definitions.jobs or []
    }
    first = " ".join(services["first-backup"]["command"])
    assert all(database in first for database in config.databases)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_installs_clients_13_to_17_and_copies_what_exists(compose):
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    args = dict(value.split("=", 1) for kind, value in instructions if kind == "ARG")
    assert args["PG_CLIENT_VERSIONS"].strip('"').split() == ["13", "14", "15", "16", "17"]
    run = " ".join(value for kind, value in instructions if kind == "RUN")
    assert "postgresql-client-$v" in run and "apt.postgresql.org" in run
    assert " zstd age" in run and 'pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"' in run
    for kind, value in instructions:
        if kind == "COPY":
            *sources, _ = value.split()
            for source in sources:
                assert (REPO / source).exists(), source
    assert ("USER", "dagster") in instructions
    exposed = {
        int(port) for kind, value in instructions if kind == "EXPOSE" for port in value.split()
    }
    published = {
        int(port.rsplit(":", 1)[1])
        for name in APP_SERVICES
        for port in compose["services"][name].get("ports", [])
    }
    assert published <= exposed
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".env", "docker/.env", ".git"} <= set(ignored)


def test_the_sample_data_step_seeds_a_real_server(cluster):
    env = {
        **os.environ,
        "SAMPLE_ADMIN_URL": cluster.url(),
        "BACKUP_PASSWORD": BACKUP_PASSWORD,
        "RESTORE_TEST_PASSWORD": RESTORE_TEST_PASSWORD,
    }
    command = [sys.executable, "-m", "backup_pipelines_demo.sample_databases"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert BACKUP_PASSWORD not in done.stdout + done.stderr
    with psycopg.connect(cluster.url("saas_console", user="backup", password=BACKUP_PASSWORD)) as c:
        assert c.execute("SELECT count(*) FROM feature_flags").fetchone()[0] == 3
