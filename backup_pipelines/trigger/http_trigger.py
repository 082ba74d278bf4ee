"""`POST /backups/<database>`, `POST /restore-points/<server>` and `POST /exports`: backups,
named restore points and data exports for systems that can only call a URL (a deployment
pipeline before a migration, a data-portability request).

Protected by a shared secret in a header (compared in constant time), so the Dagster UI
itself need not be exposed. A backup answers 202 with the run id. A restore point (JSON body
`{"name": …, "note": …}`) is answered once its run has finished: 201 when the point is
archived (a restore can reach it by name), 400 for a bad name, 409 when the run failed (the
name is already in the window, or the server does not archive). Both answer 401 without the
right secret, 404 for a name not in the configuration, 503 when Dagster cannot be reached.
An export (JSON body: the request and its `database`) is answered 202 with its id; `GET
/exports/<id>` answers its status, and once done `GET /exports/<id>/download` streams the ZIP.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection, Iterator

from dagster import DagsterRunStatus
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from backup_pipelines.core.common.layout import export_key
from backup_pipelines.core.postgres.export_request import (
    ExportRequestError,
    parse_request,
    run_config_fields,
)
from backup_pipelines.core.servers.errors import PitrError
from backup_pipelines.core.servers.restore_points import require_valid_name, require_valid_note
from backup_pipelines.storage import ObjectStore
from backup_pipelines.trigger.remote import (
    Deployment,
    RemoteError,
    export_run,
    submit_backup,
    submit_export,
    submit_restore_point,
    wait_for_run,
)

_log = logging.getLogger(__name__)
SECRET_HEADER = "X-Backup-Pipelines-Secret"
SECRET_ENV = "BACKUP_PIPELINES_TRIGGER_SECRET"
MIN_SECRET_LENGTH = 16
RESTORE_POINT_WAIT_SECONDS = 600


def _logged_download(chunks: Iterator[bytes], export_id: str, size: int) -> Iterator[bytes]:
    """The stored export to the client; a client that goes away mid-way is logged (its copy is
    short of Content-Length, so it cannot pass for the whole file; the stored one is intact)."""
    sent = 0
    try:
        for chunk in chunks:
            yield chunk
            sent += len(chunk)
    finally:
        if sent < size:
            _log.warning(
                f"download of export {export_id} stopped after {sent:,} of {size:,} bytes: the "
                "client went away; the stored export is untouched"
            )


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
    exports_store: Callable[[], ObjectStore] | None = None,
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

    def run_url(run_id: str) -> str:
        return f"{deployment.shown.rstrip('/')}/runs/{run_id}"

    async def export(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "send the export request as a JSON body"}, 400)
        database = body.get("database") if isinstance(body, dict) else None
        if database not in databases:
            known = ", ".join(sorted(databases))
            return JSONResponse(
                {"error": f"unknown database {database!r}; configured databases: {known}"}, 404
            )
        fields = {k: v for k, v in body.items() if k != "database"}
        fields.setdefault("requested_by", caller(request))
        try:
            parsed = parse_request(database, fields)
        except ExportRequestError as error:
            return JSONResponse({"error": str(error)}, 400)
        try:
            export_id, run_id = await run_in_threadpool(
                submit_export, deployment, database, run_config_fields(parsed), caller(request)
            )
        except RemoteError as error:
            return JSONResponse({"error": str(error)}, 503)
        return JSONResponse(
            {
                "id": export_id,
                "run_id": run_id,
                "status_url": f"/exports/{export_id}",
                "run_url": run_url(run_id),
            },
            202,
        )

    async def export_status(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        export_id = request.path_params["export_id"]
        try:
            found = await run_in_threadpool(export_run, deployment, export_id)
        except RemoteError as error:
            return JSONResponse({"error": str(error)}, 503)
        if found is None:
            return JSONResponse({"error": f"no export {export_id!r}"}, 404)
        answer = {"id": export_id, "status": found.status.value, "run_url": run_url(found.run_id)}
        if found.status == DagsterRunStatus.SUCCESS:
            answer["download_url"] = f"/exports/{export_id}/download"
        return JSONResponse(answer)

    async def download(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        export_id = request.path_params["export_id"]
        found = await run_in_threadpool(export_run, deployment, export_id)
        if found is None or found.status != DagsterRunStatus.SUCCESS or exports_store is None:
            return JSONResponse({"error": f"no finished export {export_id!r}"}, 404)
        store = exports_store()
        key = export_key(found.database, export_id)
        size = await run_in_threadpool(store.size, key)
        if size is None:
            return JSONResponse({"error": f"export {export_id!r} has expired"}, 410)
        return StreamingResponse(
            _logged_download(store.read_chunks(key), export_id, size),
            media_type="application/zip",
            headers={
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="{export_id}.zip"',
            },
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/backups/{database}", backup, methods=["POST"]),
            Route("/restore-points/{server}", restore_point, methods=["POST"]),
            Route("/exports", export, methods=["POST"]),
            Route("/exports/{export_id}", export_status, methods=["GET"]),
            Route("/exports/{export_id}/download", download, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
