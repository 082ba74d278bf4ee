"""Talking to a running deployment through Dagster's GraphQL API (the CLI, the HTTP trigger
and the demo), so what they submit is a run of the deployment's own code location: queued,
pooled and listed on its Jobs pages like a scheduled run.

A backup submitted from outside is the `daily_backup` job for today's (UTC) partition,
narrowed to one database's dump → archive → verification and their checks (like the
scheduled one, without the restore test).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from dagster import AssetKey, DagsterRunStatus

from backup_pipelines import names
from backup_pipelines.core.postgres.dump import utc_today

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
DEFAULT_URL = "http://127.0.0.1:3000"

_LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on Error { message }
  }
}
"""
_RUNS = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status assetSelection { path } } }
    ... on Error { message }
  }
}
"""
_SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 1) { status } } }
    ... on Error { message }
  }
}
"""
_LOCATION = """
query Location {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } pipelines { name } assetNodes { assetKey { path } } }
    }
    ... on Error { message }
  }
}
"""


_ADD_PARTITION = """
mutation AddPartition($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on Error { message }
  }
}
"""


class RemoteError(RuntimeError):
    """The deployment could not be reached or refused the request; the message says which."""


@dataclass(frozen=True)
class Deployment:
    """A Dagster webserver, by URL (e.g. http://dagster:3000 or https://user:pw@host/prefix)."""

    url: str = DEFAULT_URL
    timeout_seconds: float = 30

    @property
    def shown(self) -> str:
        """The URL without any user:password part, for messages."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def query(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(
                f"{self.shown!r} is not a webserver URL; give one like http://127.0.0.1:3000"
            )
        auth = (parts.username, parts.password or "") if parts.username else None
        try:
            response = requests.post(
                f"{self.shown.rstrip('/')}/graphql",
                json={"query": document, "variables": variables or {}},
                auth=auth,
                timeout=self.timeout_seconds,
            )
        except requests.RequestException as error:
            raise RemoteError(
                f"cannot reach the Dagster webserver at {self.shown} ({type(error).__name__}): "
                "is the deployment running, and is this its URL? "
                "(set --url or BACKUP_PIPELINES_URL)"
            ) from None
        if response.status_code != 200:
            raise RemoteError(
                f"the Dagster webserver at {self.shown} answered HTTP {response.status_code}"
                + (
                    " (wrong or missing credentials in the URL?)"
                    if response.status_code in (401, 403)
                    else ""
                )
            )
        body = response.json()
        if body.get("errors"):
            raise RemoteError(f"{self.shown} rejected the request: {body['errors'][0]['message']}")
        return body["data"]


@dataclass(frozen=True)
class _Backup:
    """What one backup run of a database or a server materializes, and in which job."""

    kind: str  # "database" or "server", as messages name it
    job: str
    prefix: str
    key_of: Callable[[str, str], AssetKey]  # (name, step) -> asset key
    checks: Mapping[str, tuple[str, ...]]  # step -> its checks


_DATABASE_BACKUP = _Backup(
    "database",
    names.DAILY_BACKUP_JOB,
    names.DATABASE_PREFIX,
    names.database_key,
    {step: names.BACKUP_CHECKS.get(step, ()) for step in names.BACKUP_STEPS},
)
_SERVER_BACKUP = _Backup(
    "server",
    names.SERVER_BACKUP_JOB,
    names.SERVER_PREFIX,
    names.server_key,
    {step: names.SERVER_CHECKS.get(step, ()) for step in names.SERVER_BACKUP_STEPS},
)


def _backup_selector(deployment: Deployment, backup: _Backup, name: str) -> dict[str, Any]:
    location, asset_paths = location_of(deployment, backup.job)
    known = sorted({path[1] for path in asset_paths if path[0] == backup.prefix and len(path) == 3})
    if name not in known:
        raise RemoteError(
            f"{deployment.shown} backs up no {backup.kind} {name!r}; its {backup.kind}s: "
            f"{', '.join(known) or 'none'}"
        )
    keys = {step: {"path": backup.key_of(name, step).path} for step in backup.checks}
    return {
        **location,
        "jobName": backup.job,
        "assetSelection": list(keys.values()),
        "assetCheckSelection": [
            {"assetKey": keys[step], "name": check}
            for step, checks in backup.checks.items()
            for check in checks
        ],
    }


def location_of(deployment: Deployment, job: str) -> tuple[dict[str, str], list[list[str]]]:
    """The code location serving `job`, and the asset keys (paths) it defines."""
    found = deployment.query(_LOCATION)["repositoriesOrError"]
    if found["__typename"] != "RepositoryConnection":
        raise RemoteError(f"{deployment.shown} cannot list its code: {found.get('message')}")
    for repository in found["nodes"]:
        if job in {pipeline["name"] for pipeline in repository["pipelines"]}:
            location = {
                "repositoryLocationName": repository["location"]["name"],
                "repositoryName": repository["name"],
            }
            return location, [node["assetKey"]["path"] for node in repository["assetNodes"]]
    raise RemoteError(
        f"{deployment.shown} has no job {job!r}: is backup_pipelines loaded in its workspace?"
    )


def submit_backup(deployment: Deployment, database: str, triggered_by: str) -> tuple[str, str]:
    """Queue today's backup of `database`; returns (run id, partition)."""
    return _submit_backup(deployment, _DATABASE_BACKUP, database, triggered_by)


def submit_server_backup(deployment: Deployment, server: str, triggered_by: str) -> tuple[str, str]:
    """Queue today's base backup (and globals) of `server`; returns (run id, partition)."""
    return _submit_backup(deployment, _SERVER_BACKUP, server, triggered_by)


def _submit_backup(
    deployment: Deployment, backup: _Backup, name: str, triggered_by: str
) -> tuple[str, str]:
    day = utc_today()
    selector = _backup_selector(deployment, backup, name)
    return submit_run(deployment, selector, triggered_by, partition=day, what=repr(name)), day


def new_export_id(database: str) -> str:
    """`<database>-<UTC time>-<random>`: unique, and sorted by when it was asked for."""
    return f"{database}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def submit_export(
    deployment: Deployment,
    database: str,
    request: dict[str, Any],
    triggered_by: str,
    export_id: str | None = None,
) -> tuple[str, str]:
    """Queue job export_data for `database` with `request` (its run config) under `export_id`
    (by default a new one), added as a partition first; returns (export id, run id)."""
    location, asset_paths = location_of(deployment, names.EXPORT_JOB)
    key = names.database_key(database, names.EXPORTS)
    if key.path not in asset_paths:
        known = sorted(p[1] for p in asset_paths if len(p) == 3 and p[2] == names.EXPORTS)
        raise RemoteError(
            f"{deployment.shown} exports no database {database!r}; its databases: "
            f"{', '.join(known) or 'none'}"
        )
    export_id = export_id or new_export_id(database)
    added = deployment.query(
        _ADD_PARTITION,
        {"selector": location, "name": names.EXPORTS_PARTITIONS, "key": export_id},
    )["addDynamicPartition"]
    if added["__typename"] != "AddDynamicPartitionSuccess":
        raise RemoteError(
            f"{deployment.shown} refused the export's partition: {added.get('message')}"
        )
    run_id = submit_run(
        deployment,
        {**location, "jobName": names.EXPORT_JOB, "assetSelection": [{"path": key.path}]},
        triggered_by,
        partition=export_id,
        what=f"the export of {database!r}",
        run_config={"ops": {"__".join(key.path): {"config": request}}},
    )
    return export_id, run_id


@dataclass(frozen=True)
class ExportRun:
    """The newest run of an export: its id, its status, and the database it exports (from the
    run's asset, so an export named anything in the launchpad is found too)."""

    run_id: str
    status: DagsterRunStatus
    database: str


def export_run(deployment: Deployment, export_id: str) -> ExportRun | None:
    """The newest run of export `export_id` (None: no such export)."""
    for run in _runs(deployment, names.EXPORT_JOB, export_id):
        for key in run["assetSelection"] or ():
            if len(key["path"]) == 3 and key["path"][2] == names.EXPORTS:
                return ExportRun(run["runId"], DagsterRunStatus(run["status"]), key["path"][1])
    return None


def submit_job(
    deployment: Deployment, job: str, triggered_by: str, partition: str | None = None
) -> str:
    """Queue a whole job (of one day, for a partitioned one); returns the run id."""
    location, _ = location_of(deployment, job)
    selector = {**location, "jobName": job}
    return submit_run(deployment, selector, triggered_by, partition=partition, what=job)


def submit_restore_point(
    deployment: Deployment, server: str, name: str, note: str, triggered_by: str
) -> str:
    """Queue the making of a named restore point on `server`; returns the run id (the point is
    recoverable once that run succeeds)."""
    location, _ = location_of(deployment, names.CREATE_RESTORE_POINT_JOB)
    request = {"server": server, "name": name, "note": note}
    return submit_run(
        deployment,
        {**location, "jobName": names.CREATE_RESTORE_POINT_JOB},
        triggered_by,
        partition=None,
        what=f"restore point {name!r} of server {server!r}",
        run_config={"ops": {names.RESTORE_POINT_OP: {"config": request}}},
    )


def submit_run(
    deployment: Deployment,
    selector: dict[str, Any],
    triggered_by: str,
    *,
    partition: str | None,
    what: str,
    run_config: dict[str, Any] | None = None,
) -> str:
    tags = [{"key": "backup_pipelines/triggered_by", "value": triggered_by}]
    if partition is not None:
        tags.append({"key": "dagster/partition", "value": partition})
    params = {
        "selector": selector,
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": tags},
    }
    launched = deployment.query(_LAUNCH, {"executionParams": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        detail = launched.get("message") or "; ".join(
            error["message"] for error in launched.get("errors", [])
        )
        raise RemoteError(
            f"{deployment.shown} refused the run of {what}: "
            f"{launched['__typename']}: {detail.strip().splitlines()[0] if detail else ''}"
        )
    return launched["run"]["runId"]


def wait_until_serving(deployment: Deployment, job: str, timeout_seconds: float) -> None:
    """Wait until the deployment answers and its code location serves `job`."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            location_of(deployment, job)
            return
        except RemoteError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def runs_of(deployment: Deployment, job: str, partition: str) -> dict[str, DagsterRunStatus]:
    """Every run of `job` for `partition`, by run id."""
    return {
        run["runId"]: DagsterRunStatus(run["status"]) for run in _runs(deployment, job, partition)
    }


def _runs(deployment: Deployment, job: str, partition: str) -> list[dict[str, Any]]:
    """Every run of `job` for `partition`, newest first: id, status and asset selection."""
    run_filter = {"pipelineName": job, "tags": [{"key": "dagster/partition", "value": partition}]}
    found = deployment.query(_RUNS, {"filter": run_filter})["runsOrError"]
    if found["__typename"] != "Runs":
        raise RemoteError(f"{deployment.shown}: {found['__typename']}: {found.get('message')}")
    return found["results"]


def sensor_has_ticked(deployment: Deployment, job: str, sensor: str) -> bool:
    """Whether `sensor` (of the code location serving `job`) has evaluated at least once."""
    location, _ = location_of(deployment, job)
    selector = {**location, "sensorName": sensor}
    found = deployment.query(_SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    if found["__typename"] != "Sensor":
        raise RemoteError(f"{deployment.shown}: {found['__typename']}: {found.get('message')}")
    return bool(found["sensorState"]["ticks"])


def run_status(deployment: Deployment, run_id: str) -> DagsterRunStatus:
    found = deployment.query(_STATUS, {"runId": run_id})["runOrError"]
    if found["__typename"] != "Run":
        raise RemoteError(f"{deployment.shown}: {found['__typename']}: {found.get('message')}")
    return DagsterRunStatus(found["status"])


def wait_for_run(
    deployment: Deployment, run_id: str, timeout_seconds: float, poll_seconds: float = 2.0
) -> DagsterRunStatus:
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = run_status(deployment, run_id)
        if status in FINISHED or time.monotonic() > deadline:
            return status
        time.sleep(poll_seconds)
