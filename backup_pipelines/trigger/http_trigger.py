"""`POST /backups/<database>` and `POST /restore-points/<server>`: backups and named restore
points for systems that can only call a URL (a deployment pipeline before a migration).

Protected by a shared secret in a header (compared in constant time), so the Dagster UI
itself need not be exposed. A backup answers 202 with the run id. A restore point (JSON body
`{"name": …, "note": …}`) is answered once its run has finished: 201 when the point is
archived (a restore can reach it by name), 400 for a bad name, 409 when the run failed (the
name is already in the window, or the server does not archive). Both answer 401 without the
right secret, 404 for a name not in the configuration, 503 when Dagster cannot be reached.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from dagster import DagsterRunStatus
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.restore_points import require_valid_name, require_valid_note
from backup_pipelines.trigger.remote import (
    Deployment,
    RemoteError,
    submit_backup,
    submit_restore_point,
    wait_for_run,
)

SECRET_HEADER = "X-Backup-Pipelines-Secret"
SECRET_ENV = "BACKUP_PIPELINES_TRIGGER_SECRET"
MIN_SECRET_LENGTH = 16
RESTORE_POINT_WAIT_SECONDS = 600


def require_secret(secret: str | None) -> str:
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"set {SECRET_ENV} to a random secret of at least {MIN_SECRET_LENGTH} characters "
            "(e.g. openssl rand -hex 32); callers send it in the "
            f"{SECRET_HEADER} header"
        )
    return secret


def trigger_app(
    databases: Collection[str],
    secret: str | None,
    deployment: Deployment,
    servers: Collection[str] = (),
) -> Starlette:
    expected = require_secret(secret).encode()

    def refused(request: Request) -> JSONResponse | None:
        provided = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(provided, expected):
            return JSONResponse({"error": f"missing or wrong {SECRET_HEADER} header"}, 401)
        return None

    def caller(request: Request) -> str:
        return f"HTTP trigger from {request.client.host if request.client else 'unknown address'}"

    async def backup(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        database = request.path_params["database"]
        if database not in databases:
            known = ", ".join(sorted(databases))
            return JSONResponse(
                {"error": f"unknown database {database!r}; configured databases: {known}"}, 404
            )
        try:
            run_id, day = await run_in_threadpool(
                submit_backup, deployment, database, caller(request)
            )
        except RemoteError as error:
            return JSONResponse({"error": str(error)}, 503)
        return JSONResponse(
            {
                "run_id": run_id,
                "database": database,
                "partition": day,
                "run_url": f"{deployment.shown.rstrip('/')}/runs/{run_id}",
            },
            202,
        )

    async def restore_point(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        server = request.path_params["server"]
        if server not in servers:
            known = ", ".join(sorted(servers)) or "none"
            return JSONResponse(
                {"error": f"unknown server {server!r}; configured servers: {known}"}, 404
            )
        try:
            body = await request.json()
            name, note = str(body.get("name", "")), str(body.get("note", ""))
            require_valid_name(server, name, set())
            require_valid_note(server, note)
        except (ValueError, AttributeError):
            return JSONResponse({"error": 'send a JSON body: {"name": "…", "note": "…"}'}, 400)
        except PitrError as error:
            return JSONResponse({"error": str(error)}, 400)
        try:
            run_id = await run_in_threadpool(
                submit_restore_point, deployment, server, name, note, caller(request)
            )
            status = await run_in_threadpool(
                wait_for_run, deployment, run_id, RESTORE_POINT_WAIT_SECONDS
            )
        except RemoteError as error:
            return JSONResponse({"error": str(error)}, 503)
        run_url = f"{deployment.shown.rstrip('/')}/runs/{run_id}"
        if status != DagsterRunStatus.SUCCESS:
            return JSONResponse(
                {
                    "error": f"the restore point run ended {status.value}: the name may already "
                    "be in the recovery window, or the server does not archive; its run says why",
                    "run_id": run_id,
                    "run_url": run_url,
                },
                409,
            )
        return JSONResponse(
            {
                "run_id": run_id,
                "server": server,
                "name": name,
                "archived": True,
                "run_url": run_url,
            },
            201,
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/backups/{database}", backup, methods=["POST"]),
            Route("/restore-points/{server}", restore_point, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
