"""Talking to a running deployment through Dagster's GraphQL API (the CLI and HTTP trigger).

A backup submitted from outside is the `daily_backup` job for today's (UTC) partition,
narrowed to one database's dump → archive → verification and their checks, so it runs
under the same queue, pools and checks as the scheduled one (and, like it, without the
restore test).
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import requests
from dagster import DagsterRunStatus

from backup_pipelines import names
from backup_pipelines.core.dump import utc_today

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


def _backup_selector(deployment: Deployment, database: str) -> dict[str, Any]:
    location, asset_paths = _location_of(deployment, names.DAILY_BACKUP_JOB)
    databases = sorted(
        {path[1] for path in asset_paths if path[0] == names.DATABASE_PREFIX and len(path) == 3}
    )
    if database not in databases:
        raise RemoteError(
            f"{deployment.shown} backs up no database {database!r}; its databases: "
            f"{', '.join(databases) or 'none'}"
        )
    keys = {
        step: {"path": names.database_key(database, step).path} for step in names.BACKUP_STEPS
    }
    return {
        **location,
        "jobName": names.DAILY_BACKUP_JOB,
        "assetSelection": list(keys.values()),
        "assetCheckSelection": [
            {"assetKey": keys[step], "name": check}
            for step, checks in names.BACKUP_CHECKS.items()
            for check in checks
        ],
    }


def _location_of(deployment: Deployment, job: str) -> tuple[dict[str, str], list[list[str]]]:
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
    day = utc_today()
    params = {
        "selector": _backup_selector(deployment, database),
        "runConfigData": {},
        "executionMetadata": {
            "tags": [
                {"key": "dagster/partition", "value": day},
                {"key": "backup_pipelines/triggered_by", "value": triggered_by},
            ]
        },
    }
    launched = deployment.query(_LAUNCH, {"executionParams": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        detail = launched.get("message") or "; ".join(
            error["message"] for error in launched.get("errors", [])
        )
        raise RemoteError(
            f"{deployment.shown} refused the backup of {database!r}: "
            f"{launched['__typename']}: {detail.strip().splitlines()[0] if detail else ''}"
        )
    return launched["run"]["runId"], day


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
