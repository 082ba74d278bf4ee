"""Every benchmark still imports (they run by hand, so a rename elsewhere would otherwise break
them unnoticed)."""

import importlib

import pytest

from backup_pipelines_tests.support.paths import REPOSITORY

BENCHMARKS = sorted(
    path.stem for path in (REPOSITORY / "benchmarks").glob("*.py") if path.stem != "__init__"
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
