"""A restore test alone, as the restore_test asset runs it: `python restore_test_step.py DB OUT`.

Reads the configuration file named by BACKUP_PIPELINES_CONFIG and writes the report's check
metadata to OUT as JSON; run by backup_throughput.py.
"""

import json
import sys

from backup_pipelines.core.common.config import config_path_from_env
from backup_pipelines.defs.postgres.restore_tests import restore_test_report
from backup_pipelines.defs.resources import BackupSettings


def main(database: str, output: str) -> None:
    report = restore_test_report(
        BackupSettings(config_path=str(config_path_from_env())), database, None
    )
    outcome = report.outcome()
    if not outcome.passed:
        raise SystemExit(f"restore test failed: {outcome.description}")
    with open(output, "w") as file:
        json.dump(outcome.metadata, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
