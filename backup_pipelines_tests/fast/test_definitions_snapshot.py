"""The inventory of every definition (asset keys, groups, pools, checks with severity and
blocking, jobs, schedules with cron, sensors) against a committed snapshot, so a rename or a
changed schedule shows up as a diff in review.

After a deliberate change: UPDATE_SNAPSHOTS=1 scripts/test -k definitions_snapshot
"""

import difflib
import os
from pathlib import Path

import yaml
from dagster import Definitions, DynamicPartitionsDefinition, PartitionsDefinition

from backup_pipelines_tests.support.runs import definitions_for

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.txt"
# Every kind of definition appears: S3 storage (bucket snapshots), a replica in another
# region, two database servers, a capacity, a PITR server with a second repository, recovery
# objectives.
CONFIG = {
    "storage": {"s3": {"bucket": "acme-backups", "prefix": "postgres"}, "capacity_gb": 100},
    "replica": {"s3": {"bucket": "acme-backups-dr", "region": "eu-west-1"}},
    "databases": {
        "agentic": {"url": "postgresql://backup@db1:5432/agentic"},
        "billing": {"url": "postgresql://backup@db2:5433/billing", "server": "db2"},
    },
    "buckets": {"media": {"bucket": "acme-uploads"}},
    "restore_test": {"test_each_new_archive": True},
    "objectives": {"rpo_minutes": 1500, "rto_minutes": 60},
    "servers": {
        "db1": {
            "url": "postgresql://backup_admin@db1:5432/postgres",
            "data_directory": "/var/lib/postgresql/15/main",
            "pgbackrest": {
                "s3": {"endpoint": "s3.eu-central-1.amazonaws.com"},
                "repo2": {"s3": {"bucket": "acme-pitr-dr", "region": "eu-west-1"}},
            },
        }
    },
}


def _partitions(partitions: PartitionsDefinition | None) -> str:
    if isinstance(partitions, DynamicPartitionsDefinition):
        return f"dynamic:{partitions.name}"
    return "daily" if partitions else "unpartitioned"


def inventory(defs: Definitions) -> list[str]:
    graph = defs.resolve_asset_graph()
    lines = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node, assets_def = graph.get(key), graph.assets_def_for_key(key)
        partitioned = _partitions(node.partitions_def)
        pools = ",".join(sorted(filter(None, [assets_def.op.pool]))) or "-"
        lines.append(
            f"asset {key.to_user_string()} group={node.group_name} {partitioned} pool={pools}"
        )
    for check in sorted(graph.asset_check_keys, key=lambda c: c.to_user_string()):
        node = graph.get(check)
        severity = node.metadata.get("severity", "undeclared")
        pool = graph.assets_def_for_key(check).op.pool or "-"
        lines.append(
            f"check {check.to_user_string()} severity={severity} blocking={node.blocking} "
            f"pool={pool}"
        )
    repository = defs.get_repository_def()
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        selected = job.asset_layer.selected_asset_keys if job.asset_layer else set()
        assets = " ".join(sorted(key.to_user_string() for key in selected)) or "(ops)"
        lines.append(f"job {job.name} assets: {assets}")
    for schedule in sorted(repository.schedule_defs, key=lambda s: s.name):
        lines.append(
            f"schedule {schedule.name} cron='{schedule.cron_schedule}' "
            f"tz={schedule.execution_timezone} job={schedule.job_name} "
            f"default={schedule.default_status.value}"
        )
    for sensor in sorted(repository.sensor_defs, key=lambda s: s.name):
        target = sensor.job_name if sensor.has_jobs else "-"
        lines.append(
            f"sensor {sensor.name} every={sensor.minimum_interval_seconds}s job={target} "
            f"default={sensor.default_status.value}"
        )
    return lines


def test_definitions_match_the_snapshot(tmp_path):
    path = tmp_path / "backup_pipelines.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    actual = "\n".join(inventory(definitions_for(path))) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(actual)
    expected = SNAPSHOT.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            "committed snapshot",
            "definitions now",
        )
    )
    assert not diff, f"the definitions changed (UPDATE_SNAPSHOTS=1 to accept):\n{diff}"
