"""The dump step alone, as the dump asset runs it: `python dump_step.py DATABASE`.

Reads the configuration file named by BACKUP_PIPELINES_CONFIG; run by backup_throughput.py.
"""

import datetime as dt
import sys

from backup_pipelines.config import expand_env, load_config
from backup_pipelines.dump import DumpSettings, take_dump
from backup_pipelines.postgres import Connection
from backup_pipelines.storage import stores_from_config


def main(database: str) -> None:
    config = load_config()
    url = expand_env(config.databases[database].url, f"databases.{database}.url")
    ref, _ = take_dump(
        Connection.from_url(database, url),
        stores_from_config(config).dumps,
        dt.datetime.now(dt.UTC).date().isoformat(),
        DumpSettings(config.compression, config.compression_level, config.pg_bin_dir),
    )
    print(ref.uri, ref.size_bytes)


if __name__ == "__main__":
    main(sys.argv[1])
