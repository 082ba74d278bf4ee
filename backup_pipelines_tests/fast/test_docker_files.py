"""docker/: no Docker engine runs here, so the files are checked for what `docker compose up`
relies on: they parse, every variable has a value, the services are wired to each other,
the backup configuration and definitions load, and the sample-data step works on a real
server."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from backup_pipelines.core.common.config import expand_env, load_config
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.pgbackrest import (
    engine_from_config,
    option_variable,
    repository_from_config,
)
from backup_pipelines.definitions import build_definitions
from backup_pipelines_tests.support.certificates import make_certificates
from backup_pipelines_tests.support.paths import DOCKER, REPOSITORY

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
    # An .env from before a secret was added gets that secret, and keeps all the others.
    older = [line for line in first.splitlines() if not line.startswith("PGBACKREST_CIPHER")]
    env_file.write_text("\n".join(older) + "\n")
    subprocess.run([str(folder / "generate-env")], check=True, capture_output=True)
    upgraded = env_file.read_text().splitlines()
    assert upgraded[: len(older)] == older and len(upgraded) == len(older) + 1
    assert upgraded[-1].startswith("PGBACKREST_CIPHER_PASS=") and len(upgraded[-1]) > 40
    return dict(line.split("=", 1) for line in upgraded if line)


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
        assert workspace == "docker/workspace.grpc.yaml" and (REPOSITORY / workspace).is_file()
        assert services[name]["depends_on"]["user-code"]["condition"] == "service_healthy"

    # The instance (dagster.yaml, the image's DAGSTER_HOME) finds its PostgreSQL.
    for variable in _ENV_REFERENCE.findall((REPOSITORY / "dagster.yaml").read_text()):
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


def dockerfile_instructions(name: str = "Dockerfile") -> list[tuple[str, str]]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
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
    # pgBackRest and the server binaries PITR restore tests start the restored copy with.
    assert args["PITR_SERVER_VERSION"].strip('"') == "17"
    assert '"postgresql-$PITR_SERVER_VERSION" pgbackrest;' in run
    assert "create_main_cluster = false" in run
    # The package's build compiles the row counter; the image proves it imports.
    assert "gcc libc6-dev" in run and "import backup_pipelines.core.postgres.rowcount" in run
    assert " zstd age" in run and 'pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"' in run
    for kind, value in instructions:
        if kind == "COPY":
            *sources, _ = value.split()
            for source in sources:
                assert (REPOSITORY / source).exists(), source
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
    ignored = (REPOSITORY / ".dockerignore").read_text().split()
    assert {".venv", ".env", "docker/.env", ".git"} <= set(ignored)


def test_the_pitr_topology_database_host_and_worker_agree(compose, monkeypatch, tmp_path):
    """archive-push on the database host and the worker's base backups use one repository;
    the worker reaches the host's TLS server with the certificates make-certificates writes."""
    services = compose["services"]
    worker = services["user-code"]
    for name, value in worker["environment"].items():
        monkeypatch.setenv(name, value)
    config = load_config(DOCKER / "backup_pipelines.yaml")
    host = services["sample-postgres"]
    host_env = host["environment"]

    repository = repository_from_config(config, "sample")
    for option, value in {**repository.options, **repository.secrets}.items():
        assert host_env[option_variable(option)] == value, option
    assert repository.encrypted and repository.options["repo1-type"] == "s3"
    assert repository.options["repo1-storage-ca-file"] == "/certs/ca.crt"
    connection = Connection.from_url("sample", expand_env(config.servers["sample"].url, "url"))
    engine = engine_from_config(config, "sample", connection)
    assert host_env["PGBACKREST_STANZA"] == engine.stanza
    assert host_env["PGBACKREST_PG1_PATH"] == str(engine.data_directory)
    assert host_env["PGBACKREST_TLS_SERVER_AUTH"] == f"backup-worker={engine.stanza}"
    assert engine.os_user == "dagster"  # the worker image's user, who runs the copies

    # The names make-certificates signs are the hosts the parties dial.
    made = services["certificates"]["entrypoint"]
    assert made[:2] == ["make-certificates", "/certs"]
    database_host, s3_host = made[2:]
    tls = config.servers["sample"].pgbackrest_server
    assert tls is not None and tls.host == database_host and database_host in services
    assert repository.options["repo1-s3-endpoint"] == s3_host and s3_host in services
    files = {
        tls.ca_file: "ca.crt",
        tls.cert_file: "backup-worker.crt",
        tls.key_file: "backup-worker.key",
        host_env["PGBACKREST_TLS_SERVER_CERT_FILE"]: "database-host.crt",
        host_env["PGBACKREST_TLS_SERVER_KEY_FILE"]: "database-host.key",
    }
    made_here = make_certificates(tmp_path / "certs")  # what the certificates service writes
    for path, name in files.items():
        assert path == f"/certs/{name}" and (made_here / name).is_file()
    for name in ("user-code", "sample-postgres", "minio-tls"):
        assert "certificates:/certs:ro" in services[name]["volumes"], name
    assert "certificates:/certs" in services["certificates"]["volumes"]

    # HTTPS in front of MinIO: the file the tests' TLS terminator runs (conftest).
    assert "./minio-tls.conf:/etc/nginx/conf.d/default.conf:ro" in services[s3_host]["volumes"]
    setup = " ".join(services["minio-setup"]["command"])
    bucket = repository.options["repo1-s3-bucket"]
    assert f"mc mb --ignore-existing store/{bucket} " in setup  # no lock: expire deletes there

    # The database host's image and start script: archive-push, archive_timeout, TLS server.
    for name in ("certificates", "sample-postgres"):
        build = services[name]["build"]
        assert build == {"context": "..", "dockerfile": "docker/sample-postgres.Dockerfile"}
    instructions = dockerfile_instructions("sample-postgres.Dockerfile")
    assert instructions[0] == ("FROM", "postgres:17-bookworm")
    copied = next(value for kind, value in instructions if kind == "COPY").split()
    assert copied[:-1] == ["docker/make-certificates", "docker/sample-postgres-start"]
    assert host["entrypoint"] == ["sample-postgres-start"]
    start = (DOCKER / "sample-postgres-start").read_text()
    assert "(gosu postgres pgbackrest server &)" in start and host["init"] is True
    assert "/dev/tcp/127.0.0.1/8432" in host["healthcheck"]["test"][1]
    assert "-c 'archive_command=pgbackrest archive-push %p'" in start
    assert "-c archive_timeout=60" in start and "-c archive_mode=on" in start
    for script in ("make-certificates", "sample-postgres-start", "generate-env"):
        checked = subprocess.run(["sh", "-n", str(DOCKER / script)], capture_output=True)
        assert checked.returncode == 0, (script, checked.stderr)
        assert os.access(DOCKER / script, os.X_OK), script

    first = " ".join(services["first-backup"]["command"])
    assert "backup-pipelines --url http://webserver:3000 backup-server sample" in first
