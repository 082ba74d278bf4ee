"""Loaded once per run by the forkserver that starts the run's step processes (STEP_EXECUTOR in
definitions.py): the Dagster instance's storage modules and this project's definitions. Every
step process forked from it inherits them, instead of importing the storage modules (about
1 s of CPU) and building the definitions (about 0.5 s for 20 databases) again, step after step."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

import dagster._core.instance.factory  # what opening the run's instance imports
import dagster._core.secrets.loader
import dagster._core.storage.sqlite_storage  # the default instance's storage
from dagster._core.instance.ref import InstanceRef

from backup_pipelines.core.config import ConfigError
from backup_pipelines.definitions import definitions_from_env


def _import_instance_modules() -> None:
    """The modules named by $DAGSTER_HOME/dagster.yaml (storage, compute logs, launcher)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").exists():
        return
    ref = InstanceRef.from_dir(home)
    for field in ref._fields:
        module = getattr(getattr(ref, field), "module_name", None)
        if module:
            importlib.import_module(module)


_import_instance_modules()
# A configuration that does not load is reported by the step that loads it.
with contextlib.suppress(ConfigError, OSError):
    definitions_from_env()
