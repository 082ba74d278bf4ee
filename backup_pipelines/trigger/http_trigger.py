"""`POST /backups/<database>`: a backup for systems that can only call a URL.

Protected by a shared secret in a header (compared in constant time), so the Dagster UI
itself need not be exposed. Answers 202 with the run id, 401 without the right secret,
404 for a database not in the configuration, 503 when Dagster cannot be reached.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backup_pipelines.trigger.remote import Deployment, RemoteError, submit_backup

SECRET_HEADER = "X-Backup-Pipelines-Secret"
SECRET_ENV = "BACKUP_PIPELINES_TRIGGER_SECRET"
MIN_SECRET_LENGTH = 16


def require_secret(secret: str | None) -> str:
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"set {SECRET_ENV} to a random secret of at least {MIN_SECRET_LENGTH} characters "
            "(e.g. openssl rand -hex 32); callers send it in the "
            f"{SECRET_HEADER} header"
        )
    return secret


def trigger_app(
    databases: Collection[str], secret: str | None, deployment: Deployment
) -> Starlette:
    expected = require_secret(secret).encode()

    async def backup(request: Request) -> JSONResponse:
        provided = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(provided, expected):
            return JSONResponse({"error": f"missing or wrong {SECRET_HEADER} header"}, 401)
        database = request.path_params["database"]
        if database not in databases:
            known = ", ".join(sorted(databases))
            return JSONResponse(
                {"error": f"unknown database {database!r}; configured databases: {known}"}, 404
            )
        caller = request.client.host if request.client else "unknown address"
        try:
            run_id, day = await run_in_threadpool(
                submit_backup, deployment, database, f"HTTP trigger from {caller}"
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

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/backups/{database}", backup, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
