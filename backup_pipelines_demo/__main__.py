"""The demo: a local PostgreSQL with five sample databases, a backup, a restore test, the UI.

    scripts/demo                  # sets up, backs up today's partition, opens the UI on :3000
    scripts/demo --host 0.0.0.0   # the UI reachable from other machines (a remote server)
    scripts/demo --no-ui          # the same, then stops (a smoke test of the whole set-up)

The deployment (`dg dev`: webserver and daemon) starts first and the demo submits its runs to
it over GraphQL, as the project's CLI does, so they are the deployment's own runs: listed on
the Jobs pages and the Overview timeline. The restore tests are the new-archive sensor's.
Ctrl-C stops the UI and the PostgreSQL server. Running it again reuses the server and data.
"""

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.servers.pgbackrest import repository_from_config
from backup_pipelines.trigger.remote import Deployment, RemoteError
from backup_pipelines_demo.cluster import LocalCluster, archive_with_pgbackrest, start_cluster
from backup_pipelines_demo.first_runs import first_runs
from backup_pipelines_demo.sample_databases import SAMPLE_DATABASES, seed

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / ".demo"
CONFIG = REPO / "backup_pipelines.yaml"
DEPLOYMENT_LOG = DEMO_DIR / "dagster.log"
PORT = 54329  # the port backup_pipelines.yaml names
DAGSTER_YAML = """\
# The demo's Dagster instance. Pools cap parallel dumps per database server.
concurrency:
  pools:
    default_limit: 2
telemetry:
  enabled: false
"""


def _secret(name: str) -> str:
    """A password made once per demo folder and kept there (mode 600)."""
    path = DEMO_DIR / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    return path.read_text()


def _prepare_databases(cluster: LocalCluster, passwords: dict[str, str]) -> None:
    print(f"preparing sample databases: {', '.join(SAMPLE_DATABASES)}")
    seed(cluster.url(), passwords["DEMO_BACKUP_PASSWORD"], passwords["DEMO_RESTORE_PASSWORD"])


def _archive_wal(cluster: LocalCluster) -> None:
    """The demo server archives its WAL into the local pgBackRest repository that
    backup_pipelines.yaml names (servers.demo), so it can be recovered to any moment."""
    for server in load_config(CONFIG).servers:
        repository = repository_from_config(load_config(CONFIG), server)
        if archive_with_pgbackrest(cluster, server, {**repository.options, **repository.secrets}):
            print(f"turning on WAL archiving with pgBackRest (server {server})")
            cluster.stop()
            cluster.start()


def _dagster_env(passwords: dict[str, str]) -> dict[str, str]:
    home = DEMO_DIR / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    # `dg dev` (or `dagster dev`) started by hand in the repo root reads this file too.
    (REPO / ".env").write_text("".join(f"{name}={value}\n" for name, value in passwords.items()))
    return {
        **os.environ,
        **passwords,
        "DAGSTER_HOME": str(home),
        "BACKUP_PIPELINES_CONFIG": str(CONFIG),
        # dg compares the active virtual environment with the project's .venv.
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
    }


def _dg(command: str, *args: str) -> list[str]:
    """`dg` on this project (pyproject's [tool.dg]). Run from the demo folder: in the repository
    root Dagster would also find the production dagster.yaml and warn that DAGSTER_HOME wins."""
    return [str(Path(sys.executable).parent / "dg"), command, "--target-path", str(REPO), *args]


def _start_deployment(env: dict[str, str], host: str, port: int) -> subprocess.Popen:
    """`dg dev`: the webserver and the daemon (schedules, sensors, the run queue). Its output,
    every run's event stream included, goes to a log file; the UI shows the same events."""
    print(f"starting the deployment (dg dev); its log: {DEPLOYMENT_LOG}")
    with DEPLOYMENT_LOG.open("ab") as log:
        return subprocess.Popen(
            _dg("dev", "--host", host, "--port", str(port)),
            cwd=DEMO_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(deployment: subprocess.Popen) -> None:
    # dg dev in its own session ignores the terminal's Ctrl-C: stop its group.
    if deployment.poll() is None:
        os.killpg(deployment.pid, signal.SIGTERM)
        try:
            deployment.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(deployment.pid, signal.SIGKILL)


def _ui_address(host: str, port: int) -> str:
    if host in ("127.0.0.1", "localhost"):
        return (
            f"http://127.0.0.1:{port} (on a remote machine: ssh -L {port}:127.0.0.1:{port} "
            f"<machine>, then open that address here, or start with --host 0.0.0.0)"
        )
    shown = socket.gethostname() if host == "0.0.0.0" else host
    return f"http://{shown}:{port}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C and `kill` both stop everything, even when started with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-ui", action="store_true", help="back up once, then stop")
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the UI listens on (0.0.0.0: every interface, for a remote machine)",
    )
    options = parser.parse_args()
    print(
        "The first run takes about 6 minutes on a 2-core machine (sample databases, the "
        "deployment's start, a backup, restore tests, a base backup and a PITR restore test); "
        "later runs reuse the server and its data."
    )

    DEMO_DIR.mkdir(exist_ok=True)
    DEMO_DIR.chmod(0o755)  # the server runs as the postgres user and must reach its folder
    cluster = start_cluster(DEMO_DIR / "postgres", _secret("superuser"), port=PORT)
    try:
        passwords = {
            "DEMO_BACKUP_PASSWORD": _secret("backup"),
            "DEMO_RESTORE_PASSWORD": _secret("restore_tester"),
            "DEMO_SUPERUSER_PASSWORD": _secret("superuser"),
        }
        _archive_wal(cluster)
        _prepare_databases(cluster, passwords)
        env = _dagster_env(passwords)
        ui = _start_deployment(env, options.host, options.ui_port)
        try:
            outcome = first_runs(
                Deployment(f"http://127.0.0.1:{options.ui_port}"),
                CONFIG,
                "the demo (scripts/demo)",
                change_a_setting=cluster.change_a_setting,
            )
            if outcome == 0:
                print(
                    f"backups are in {DEMO_DIR / 'backups'}; the runbook is "
                    f"{DEMO_DIR / 'backups' / 'archive' / 'recovery_runbook.html'}"
                )
            if options.no_ui:
                return outcome
            print(
                f"\nDagster UI: {_ui_address(options.host, options.ui_port)}  "
                "(Ctrl-C stops the UI and PostgreSQL)\n"
                "What to look at: README.md, section 'What to click' (the lineage of each "
                "database, the checks, the restore tests, the recovery runbook).\n"
            )
            ui.wait()
            return outcome
        except KeyboardInterrupt:
            return 0
        except RemoteError as error:
            print(f"demo: {error}", file=sys.stderr)
            return 1
        finally:
            _stop(ui)
    finally:
        cluster.stop()
        print("PostgreSQL stopped")


if __name__ == "__main__":
    sys.exit(main())
