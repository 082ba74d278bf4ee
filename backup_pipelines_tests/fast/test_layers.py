"""The package's imports point down only: storage and the names at the bottom, the backup logic
(core/: shared pieces, then one folder per backup family, then what spans families) above them,
the Dagster wiring above that. A module may import its own domain and any lower layer; an
import of a sibling domain or of a higher layer is a defect this test names."""

import os
import subprocess
import sys

from backup_pipelines_tests.support.imports import imports_of, package_modules
from backup_pipelines_tests.support.paths import REPOSITORY

PACKAGE = "backup_pipelines"
# Lowest first; the domains of one layer do not import each other.
LAYERS = (
    ("names", "storage", "dagster_private"),
    ("core.common",),
    ("core.postgres", "core.servers", "core.buckets", "core.configs"),
    ("core.retention", "core.recovery"),
    ("defs", "trigger"),
    ("definitions",),
    ("forkserver",),
)


def domain_of(module: str) -> tuple[int, str] | None:
    """(layer, domain) of a module of the package; None for the package itself."""
    for layer, domains in enumerate(LAYERS):
        for domain in domains:
            name = f"{PACKAGE}.{domain}"
            if module == name or module.startswith(f"{name}."):
                return layer, domain
    return None


def test_every_module_has_a_layer():
    unplaced = [
        module
        for module, _ in package_modules(PACKAGE)
        if module not in (PACKAGE, f"{PACKAGE}.core") and domain_of(module) is None
    ]
    assert not unplaced


def test_no_import_points_up_or_sideways():
    wrong = []
    for module, path in package_modules(PACKAGE):
        own = domain_of(module)
        if own is None:
            continue
        for imported in imports_of(path):
            target = domain_of(imported)
            if target is None or target[1] == own[1]:
                continue
            if target[0] >= own[0]:
                wrong.append(f"{module} imports {imported} ({target[1]} is not below {own[1]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_backup_logic_and_storage_import_no_dagster():
    """(names.py builds AssetKeys inside its key functions only, so core/ can use its names.)"""
    dagster_users = [
        module
        for module, path in package_modules(PACKAGE)
        if module.startswith((f"{PACKAGE}.core.", f"{PACKAGE}.storage"))
        and any(name == "dagster" or name.startswith("dagster.") for name in imports_of(path))
    ]
    assert not dagster_users


CLOUD_SDKS = ("boto3", "azure.storage.blob", "google.cloud.storage")


def _imported_sdks(statement: str, **env: str) -> list[str]:
    probe = f"import sys; {statement}; print(*[m for m in {CLOUD_SDKS!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_cloud_sdks_are_imported_by_a_store_of_theirs_and_the_forkserver_only():
    """They take a second each to import: an export into a local store and a deployment whose
    stores are local (every process that loads the definitions) start without them, and a
    run's step processes inherit them from the forkserver."""
    local = (
        "import backup_pipelines.core.postgres.export, backup_pipelines.storage as s; s.LocalStore"
    )
    assert _imported_sdks(local) == []
    load = "from backup_pipelines.definitions import definitions_from_env; definitions_from_env()"
    assert (
        _imported_sdks(load, BACKUP_PIPELINES_CONFIG=str(REPOSITORY / "backup_pipelines.yaml"))
        == []
    )
    assert _imported_sdks("from backup_pipelines.storage import S3Store") == ["boto3"]
    assert _imported_sdks("import backup_pipelines.forkserver") == list(CLOUD_SDKS)
