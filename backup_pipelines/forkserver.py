"""Loaded once per run by the forkserver that starts the run's step processes (STEP_EXECUTOR in
definitions.py): the Dagster instance's storage modules, the cloud stores' SDKs and this
project's definitions. Every step process forked from it inherits them, instead of importing
the storage modules (about 1 s of CPU) and building the definitions (about 0.5 s for 20
databases) again, step after step."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

from backup_pipelines.core.common.config import ConfigError
from backup_pipelines.dagster_private import INSTANCE_MODULES, InstanceRef
from backup_pipelines.definitions import definitions_from_env


def _configured_modules() -> list[str]:
    """The modules named by $DAGSTER_HOME/dagster.yaml (storage, compute logs, launcher)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").exists():
        return []
    ref = InstanceRef.from_dir(home)
    named = (getattr(getattr(ref, field), "module_name", None) for field in ref._fields)
    return [module for module in named if module]


# The cloud stores' modules and their SDKs too: a process imports them on first use
# (storage/__init__.py), and here that is once per run instead of once per step.
_CLOUD_STORE_MODULES = ("storage.s3", "storage.azure", "storage.gcs")

for _module in (
    *INSTANCE_MODULES,
    *_configured_modules(),
    *(f"backup_pipelines.{m}" for m in _CLOUD_STORE_MODULES),
):
    importlib.import_module(_module)
# A configuration that does not load is reported by the step that loads it.
with contextlib.suppress(ConfigError, OSError):
    definitions_from_env()
