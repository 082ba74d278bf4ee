"""The package as an operator installs it: the sdist and the wheel built as a release would be,
the wheel installed (not editable) into a fresh virtualenv outside the checkout, and a real
daily_backup and restore_test run by that environment's own `dagster` against the session's
server. The row counter must come from the wheel's own build; without a compiler the build
fails at once with a message saying what is missing."""

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import AssetCheckEvaluation, DagsterEventType, DagsterInstance, EventRecordsFilter

from backup_pipelines import names
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    RESTORE_TEST_PASSWORD,
    config_document,
    today,
)
from backup_pipelines_tests.support.paths import REPOSITORY

DATABASE = "agentic"


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="backup-pipelines-installed-"))
    folder.chmod(0o755)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture(scope="module")
def built(outside: Path) -> dict[str, Path]:
    """`python -m build`: the sdist, then the wheel built from that sdist (so the sdist is
    proven to carry the C source)."""
    dist = outside / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPOSITORY)], cwd=outside)
    (sdist,) = dist.glob("backup_pipelines-*.tar.gz")
    (wheel,) = dist.glob("backup_pipelines-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(outside: Path, built: dict[str, Path]) -> Path:
    venv = outside / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run(
        [
            str(venv / "bin/pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            # No bytecode compiled up front for every dependency: Python compiles what it
            # imports, and the package installed is the same.
            "--no-compile",
            str(built["wheel"]),
        ]
    )
    return venv


def test_the_wheel_is_platform_specific_and_carries_the_compiled_counter(built):
    assert "-cp311-" in built["wheel"].name and built["wheel"].name.endswith("linux_x86_64.whl")
    listing = _run([sys.executable, "-m", "zipfile", "-l", str(built["wheel"])]).stdout
    assert "backup_pipelines/core/postgres/_rowcount.cpython-311" in listing
    contents = _run(["tar", "tzf", str(built["sdist"])]).stdout
    assert "backup_pipelines/core/postgres/_rowcount.c" in contents and "setup.py" in contents


def test_the_installed_wheel_backs_up_and_restore_tests_a_database(installed, outside, cluster):
    """The wheel's own dagster runs the daily backup and the restore test; the row counter,
    the checks and the restore all come from the installed package, not the checkout."""
    where = _run(
        [
            str(installed / "bin/python"),
            "-c",
            "import backup_pipelines; print(backup_pipelines.__file__)",
        ],
        cwd=outside,
    ).stdout
    assert where.startswith(str(installed)), where
    config = outside / "backup_pipelines.yaml"
    document = config_document(
        cluster,
        {"local": {"path": str(outside / "backups")}},
        {
            DATABASE: {
                "url": cluster.url(DATABASE, user="backup", password="${TEST_BACKUP_PASSWORD}")
            }
        },
    )
    config.write_text(yaml.safe_dump(document))
    home = outside / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV"))
    }
    env |= {
        "PATH": f"{installed / 'bin'}:{env['PATH']}",
        "DAGSTER_HOME": str(home),
        "BACKUP_PIPELINES_CONFIG": str(config),
        "TEST_BACKUP_PASSWORD": BACKUP_PASSWORD,
        "TEST_RESTORE_PASSWORD": RESTORE_TEST_PASSWORD,
    }
    tags = f'{{"dagster/partition": "{today()}"}}'
    for job in (names.DAILY_BACKUP_JOB, names.RESTORE_TEST_JOB):
        _run(
            [
                str(installed / "bin/dagster"),
                "job",
                "execute",
                "-m",
                "backup_pipelines.definitions",
                "-j",
                job,
                "--tags",
                tags,
            ],
            cwd=outside,
            env=env,
            timeout=900,
        )
    evaluations = _check_evaluations(home)
    for check in (
        names.DUMP_COMPLETE,
        names.ARCHIVE_CHECKSUM,
        names.ARCHIVE_CONTENTS,
        names.RESTORED_DATA_MATCHES,
    ):
        assert evaluations.get(check) is True, (check, evaluations)
    assert list((outside / "backups").rglob(f"*{DATABASE}*"))


def _check_evaluations(home: Path) -> dict[str, bool]:
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION)
        )
    found: dict[str, bool] = {}
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data
        assert isinstance(data, AssetCheckEvaluation)
        found[data.check_name] = data.passed
    return found


def test_without_a_compiler_the_build_fails_saying_what_is_missing(built, outside):
    """CC names no compiler: the build stops with the package's own message, not later in a
    backup."""
    unpacked = outside / "unpacked"
    unpacked.mkdir()
    _run(["tar", "xzf", str(built["sdist"]), "-C", str(unpacked)])
    (source,) = unpacked.iterdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--outdir",
            str(outside / "no-compiler"),
            str(source),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CC": "/nonexistent/cc"},
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "cannot compile its row counter" in output
    assert "needs a C compiler and the Python headers" in output
    assert not list((outside / "no-compiler").glob("*.whl"))
