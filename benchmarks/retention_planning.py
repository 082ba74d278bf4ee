"""How long the retention sensor takes to plan a large history, against a real S3 endpoint.

    .venv/bin/python -m benchmarks.retention_planning --objects 20000

Writes N/4 days of synthetic backups of one database (archive + manifest + two references a
day) into a local S3 endpoint (moto over HTTP), records 400 days of passed verifications in a
Dagster instance, then times what the sensor does each hour: list the stores page by page, read
the verification records, apply the policy. Also times a bare paginated listing of the same
bucket, the floor any planner must pay.
"""

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import boto3
import yaml
from dagster import AssetCheckEvaluation, instance_for_test
from moto.server import ThreadedMotoServer

from backup_pipelines import names
from backup_pipelines.core.common.config import load_config
from backup_pipelines.core.common.stores import stores_from_config
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.retention.jobs import plan_all
from backup_pipelines.names import VERIFYING_CHECKS
from backup_pipelines_tests.support.synthetic_history import write_synthetic_history

# Dagster's default timeout for one sensor evaluation (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS).
SENSOR_TICK_LIMIT_SECONDS = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    options = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    work = Path(tempfile.mkdtemp(prefix="retention-bench-"))
    config_path = work / "backup_pipelines.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "s3": {"bucket": "bench", "endpoint_url": endpoint, "region": "us-east-1"}
                },
                "databases": {"bench": {"url": "postgresql://unused@127.0.0.1/bench"}},
            }
        )
    )
    stores = stores_from_config(load_config(config_path))
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in range(options.objects // 4)]
    started = time.monotonic()
    write_synthetic_history(stores, "bench", days, threads=32)
    seconds = time.monotonic() - started
    print(f"wrote {len(days) * 4:,} objects ({len(days):,} days) in {seconds:.1f} s")

    with instance_for_test() as instance:
        for day in days[:400]:
            for check in VERIFYING_CHECKS:
                instance.report_runless_asset_event(
                    AssetCheckEvaluation(
                        asset_key=names.database_key("bench", names.VERIFICATION),
                        check_name=check,
                        passed=True,
                        partition=day.isoformat(),
                    )
                )
        started = time.monotonic()
        listed = sum(1 for store in (stores.archive, stores.refs) for _ in store.list_keys(""))
        listing = time.monotonic() - started
        started = time.monotonic()
        (plan,) = plan_all(BackupSettings(config_path=str(config_path)), instance)
        planning = time.monotonic() - started
    server.stop()
    print(f"bare paginated listing   {listing:6.1f} s  ({listed:,} objects)")
    print(
        f"retention plan           {planning:6.1f} s  ({len(plan.kept)} days kept, "
        f"{len(plan.deletions):,} to delete)  x listing {planning / listing:.2f}"
    )
    verdict = "within" if planning < SENSOR_TICK_LIMIT_SECONDS else "OVER"
    print(f"the plan is {verdict} the {SENSOR_TICK_LIMIT_SECONDS} s a sensor tick may take")


if __name__ == "__main__":
    main()
