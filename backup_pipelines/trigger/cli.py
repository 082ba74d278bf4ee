"""`backup-pipelines`: submit a backup to a running deployment, ask about a run, or serve
the HTTP trigger. For cron jobs and CI steps; exit codes are documented in the README."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from pathlib import Path

import yaml
from dagster import DagsterRunStatus

from backup_pipelines.core.common.config import ConfigError, load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.core.postgres.export_request import parse_request, run_config_fields
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.restore_points import require_valid_name, require_valid_note
from backup_pipelines.trigger.http_trigger import SECRET_ENV, trigger_app
from backup_pipelines.trigger.remote import (
    DEFAULT_URL,
    FINISHED,
    Deployment,
    RemoteError,
    run_status,
    submit_backup,
    submit_export,
    submit_restore_point,
    submit_server_backup,
    wait_for_run,
)

URL_ENV = "BACKUP_PIPELINES_URL"
EXIT_OK, EXIT_RUN_FAILED, EXIT_ERROR, EXIT_NOT_FINISHED = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backup-pipelines", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the Dagster webserver (default ${URL_ENV} or {DEFAULT_URL})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    backup = commands.add_parser("backup", help="queue today's backup of one database")
    backup.add_argument("database")
    server = commands.add_parser(
        "backup-server", help="queue today's base backup of one server (servers:)"
    )
    server.add_argument("server")
    status = commands.add_parser("status", help="print a run's status")
    status.add_argument("run_id")
    export = commands.add_parser(
        "export",
        help="queue a data export of one database; prints the export id and the run id",
    )
    export.add_argument("database")
    export.add_argument(
        "--request",
        required=True,
        help="a JSON or YAML file: tables, queries, params, follow_parents, format, reason",
    )
    for command in (backup, server, status, export):
        command.add_argument("--wait", action="store_true", help="wait until the run finishes")
        command.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait")
    point = commands.add_parser(
        "restore-point",
        help="make a named restore point on a server and wait until it is archived (the exit "
        "status is 0 once a restore can reach it by name)",
    )
    point.add_argument("server")
    point.add_argument("name")
    point.add_argument("--note", default="", help="why the point is made (kept in the audit)")
    point.add_argument("--timeout", type=float, default=600, help="seconds to wait")
    point.set_defaults(wait=True)
    serve = commands.add_parser(
        "serve-trigger",
        help="serve POST /backups/<database>, POST /restore-points/<server> and the exports",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    return parser


def _finish(deployment: Deployment, run_id: str, args: argparse.Namespace) -> int:
    if args.wait:
        status = wait_for_run(deployment, run_id, args.timeout)
    else:
        status = run_status(deployment, run_id)
    print(status.value)
    if status == DagsterRunStatus.SUCCESS:
        return EXIT_OK
    return EXIT_RUN_FAILED if status in FINISHED else EXIT_NOT_FINISHED


def _serve(deployment: Deployment, args: argparse.Namespace) -> int:
    import uvicorn

    config = load_config()
    app = trigger_app(
        list(config.databases),
        os.environ.get(SECRET_ENV),
        deployment,
        list(config.servers),
        exports_store=lambda: stores_from_config(config).dumps,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    deployment = Deployment(args.url)
    try:
        if args.command == "serve-trigger":
            return _serve(deployment, args)
        who = f"backup-pipelines CLI ({getpass.getuser()}@{socket.gethostname()})"
        if args.command == "export":
            fields = yaml.safe_load(Path(args.request).read_text())
            request = parse_request(args.database, fields)
            export_id, run_id = submit_export(
                deployment, args.database, run_config_fields(request), who
            )
            print(export_id, run_id, flush=True)
            return _finish(deployment, run_id, args) if args.wait else EXIT_OK
        if args.command in ("backup", "backup-server", "restore-point"):
            if args.command == "restore-point":
                require_valid_name(args.server, args.name, set())
                require_valid_note(args.server, args.note)
                run_id = submit_restore_point(deployment, args.server, args.name, args.note, who)
            elif args.command == "backup":
                run_id, _ = submit_backup(deployment, args.database, who)
            else:
                run_id, _ = submit_server_backup(deployment, args.server, who)
            print(run_id, flush=True)
            return _finish(deployment, run_id, args) if args.wait else EXIT_OK
        return _finish(deployment, args.run_id, args)
    except (RemoteError, ConfigError, PitrError, ValueError, OSError, yaml.YAMLError) as error:
        print(f"backup-pipelines: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
