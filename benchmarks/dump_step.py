"""The dump step alone, as the dump asset runs it: `python dump_step.py DATABASE`.

Reads the configuration file named by BACKUP_PIPELINES_CONFIG; run by backup_throughput.py.
"""

import datetime as dt
import sys

from backup_pipelines.core.common.config import config_path_from_env
from backup_pipelines.core.postgres.dump import take_dump
from backup_pipelines.defs.resources import BackupSettings


def main(database: str) -> None:
    settings = BackupSettings(config_path=str(config_path_from_env()))
    ref, _ = take_dump(
        settings.database(database).connection,
        settings.stores().dumps,
        dt.datetime.now(dt.UTC).date().isoformat(),
        settings.dump_settings(),  # with encryption when the file configures it
    )
    print(ref.uri, ref.size_bytes)


if __name__ == "__main__":
    main(sys.argv[1])
