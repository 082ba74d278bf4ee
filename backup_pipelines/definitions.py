"""The code location: every domain's definitions (defs/<domain>/definitions.py), merged.

    dg dev                                   # in the repository root (pyproject's [tool.dg])
    dagster api grpc -m backup_pipelines.definitions ...   # a separate code server

Built from the file named by BACKUP_PIPELINES_CONFIG (default ./backup_pipelines.yaml).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

from dagster import BetaWarning, Definitions, definitions, multiprocess_executor

from backup_pipelines.core.common.config import BackupConfig, config_path_from_env, load_config
from backup_pipelines.defs.alerts.definitions import alerts_definitions
from backup_pipelines.defs.buckets.definitions import buckets_definitions
from backup_pipelines.defs.configs.definitions import configs_definitions
from backup_pipelines.defs.postgres.definitions import postgres_definitions
from backup_pipelines.defs.project import Project
from backup_pipelines.defs.recovery.definitions import recovery_definitions
from backup_pipelines.defs.replica.definitions import replica_definitions
from backup_pipelines.defs.resources import resource_definitions
from backup_pipelines.defs.retention.definitions import retention_definitions
from backup_pipelines.defs.servers.definitions import servers_definitions
from backup_pipelines.defs.usage.definitions import usage_definitions

DOMAINS: tuple[Callable[[Project], Definitions], ...] = (
    postgres_definitions,
    replica_definitions,
    servers_definitions,
    buckets_definitions,
    configs_definitions,
    retention_definitions,
    recovery_definitions,
    alerts_definitions,
    usage_definitions,
)

# Each step runs in its own process (dumps of different servers run in parallel), forked from a
# server that has already loaded what every step needs (forkserver.py).
STEP_EXECUTOR = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["backup_pipelines.forkserver"]}}}
)


def build_definitions(config: BackupConfig, config_path: str) -> Definitions:
    project = Project.from_config(config)
    merged = Definitions.merge(
        Definitions(executor=STEP_EXECUTOR),
        resource_definitions(config_path),
        *(domain(project) for domain in DOMAINS),
    )
    with warnings.catch_warnings():
        # Dagster 1.13 passes its beta `owners` parameter itself when it binds resources to a
        # sensor's job, and warns about it in every process; this project sets no owners.
        # Resolving here (the result is cached) keeps that one warning out of the logs.
        warnings.filterwarnings("ignore", "Parameter `owners` of initializer", BetaWarning)
        merged.get_repository_def()
    return merged


def definitions_from_env() -> Definitions:
    """The definitions of the file named by BACKUP_PIPELINES_CONFIG, built once per version of
    the file in a process (and so inherited by the step processes forked after it)."""
    path = config_path_from_env()
    return _built(str(path), path.stat().st_mtime_ns if path.exists() else 0)


@functools.cache
def _built(path: str, version: int) -> Definitions:
    return build_definitions(load_config(Path(path)), path)


@definitions
def defs() -> Definitions:
    """Loaded lazily by Dagster's tools."""
    return definitions_from_env()
