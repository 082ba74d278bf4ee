"""The verification step alone, as the verification asset runs it: `python verification_step.py
DATABASE` reads today's archive copy back whole (checksum, and every byte decoded through
pg_restore). Reads the configuration file named by BACKUP_PIPELINES_CONFIG; run by
backup_throughput.py after the chain has archived today's backup.
"""

import datetime as dt
import sys

from backup_pipelines.core.common.config import config_path_from_env
from backup_pipelines.core.postgres.dump import ref_for
from backup_pipelines.core.postgres.manifest import read_manifest
from backup_pipelines.core.postgres.verification import check_archive
from backup_pipelines.defs.resources import BackupSettings


def main(database: str) -> None:
    settings = BackupSettings(config_path=str(config_path_from_env()))
    archive = settings.stores().archive
    manifest = read_manifest(archive, database, dt.datetime.now(dt.UTC).date().isoformat())
    if manifest is None:
        raise SystemExit(f"{database}: no archive copy of today to verify")
    ref = ref_for(archive, manifest)
    for outcome in check_archive(
        archive, ref, manifest, settings.client_tools(), settings.archive_key()
    ):
        if not outcome.passed:
            raise SystemExit(f"{outcome.name} failed: {outcome.description}")
        print(outcome.name, outcome.description)


if __name__ == "__main__":
    main(sys.argv[1])
