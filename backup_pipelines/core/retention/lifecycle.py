"""S3 lifecycle rules: on the backup buckets, those that match the retention settings, as a
backstop to the prune job (dumps expire, archives move to a colder storage class, abandoned
multipart uploads are aborted); on the snapshotted source buckets, the rules their `lifecycle:`
declares (the application's own files expire or move to a colder class).

    python -m backup_pipelines.core.retention.lifecycle           # print each bucket's rules
    python -m backup_pipelines.core.retention.lifecycle --apply   # write them (others are kept)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from botocore.exceptions import ClientError

from backup_pipelines import storage
from backup_pipelines.core.common.config import (
    BackupConfig,
    ConfigError,
    SourceLifecycleRule,
    load_config,
)
from backup_pipelines.core.common.stores import source_bucket_store, stores_from_config

RULE_PREFIX = "backup_pipelines-"
# The prune job removes dumps after dump_days; the bucket itself only a week later, so it is a
# backstop, not the mechanism.
DUMP_BACKSTOP_DAYS = 7
# Manifests and the runbook are small and read often; only dump files change storage class.
_TRANSITION_MIN_BYTES = 128 * 1024


def lifecycle_rules(config: BackupConfig) -> dict[str, list[dict[str, Any]]]:
    """The rules to set, by bucket: the backup buckets' and the source buckets' together (a
    bucket may be both)."""
    rules = _backup_bucket_rules(config)
    for bucket, bucket_rules in _source_bucket_rules(config).items():
        rules.setdefault(bucket, []).extend(bucket_rules)
    return rules


def bucket_clients(config: BackupConfig) -> dict[str, Any]:
    """The S3 client that reaches each bucket lifecycle_rules names."""
    dumps, archive = _backup_stores(config)
    clients = {dumps.bucket: dumps.client, archive.bucket: archive.client}
    for name in config.buckets:
        source = source_bucket_store(config, name, archive)
        clients.setdefault(source.bucket, source.client)
    return clients


def _source_bucket_rules(config: BackupConfig) -> dict[str, list[dict[str, Any]]]:
    declared = {name: source for name, source in config.buckets.items() if source.lifecycle}
    if not declared:
        return {}
    _, archive = _backup_stores(config)
    rules: dict[str, list[dict[str, Any]]] = {}
    for name, source in declared.items():
        bucket = source_bucket_store(config, name, archive).bucket
        rules.setdefault(bucket, []).extend(_source_rule(name, rule) for rule in source.lifecycle)
    return rules


def _source_rule(bucket_name: str, rule: SourceLifecycleRule) -> dict[str, Any]:
    actions: dict[str, Any] = {}
    if rule.transition_days is not None:
        transition = {"Days": rule.transition_days, "StorageClass": rule.storage_class}
        actions["Transitions"] = [transition]
    if rule.expire_days is not None:
        actions["Expiration"] = {"Days": rule.expire_days}
    return {
        "ID": f"{RULE_PREFIX}{bucket_name}-{rule.name}",
        "Filter": {"Prefix": rule.prefix},
        "Status": "Enabled",
        **actions,
    }


def _backup_stores(config: BackupConfig) -> tuple[storage.S3Store, storage.S3Store]:
    """The dump and archive stores, which lifecycle rules need in S3."""
    if config.storage.s3 is None:
        raise ConfigError(
            "lifecycle rules are applied by this command to S3 storage only, not "
            f"storage.{config.storage.kind}: "
            "on Azure set a lifecycle management policy on the storage account, on GCS the "
            "bucket's lifecycle configuration (`gcloud storage buckets update --lifecycle-file`)"
        )
    stores = stores_from_config(config)
    assert isinstance(stores.dumps, storage.S3Store)
    assert isinstance(stores.archive, storage.S3Store)
    return stores.dumps, stores.archive


def _backup_bucket_rules(config: BackupConfig) -> dict[str, list[dict[str, Any]]]:
    s3 = config.storage.s3
    dumps, archive = _backup_stores(config)
    assert s3 is not None
    dump_days = max(config.retention_for(db).dump_days for db in config.databases)
    rules: dict[str, list[dict[str, Any]]] = {dumps.bucket: [], archive.bucket: []}
    rules[dumps.bucket].append(
        {
            "ID": f"{RULE_PREFIX}expire-dumps",
            "Filter": {"Prefix": f"{dumps.prefix}/"},
            "Status": "Enabled",
            "Expiration": {"Days": dump_days + DUMP_BACKSTOP_DAYS},
        }
    )
    if s3.archive_transition_days:
        rules[archive.bucket].append(
            {
                "ID": f"{RULE_PREFIX}archive-to-{s3.archive_transition_storage_class.lower()}",
                "Filter": {
                    "And": {
                        "Prefix": f"{archive.prefix}/" if archive.prefix else "",
                        "ObjectSizeGreaterThan": _TRANSITION_MIN_BYTES,
                    }
                },
                "Status": "Enabled",
                "Transitions": [
                    {
                        "Days": s3.archive_transition_days,
                        "StorageClass": s3.archive_transition_storage_class,
                    }
                ],
            }
        )
    if s3.object_lock:
        # The prune job's deletes leave the data of a versioned (object-locked) bucket behind
        # as noncurrent versions; S3 removes those a day later (never before their lock ends).
        rules[archive.bucket].append(
            {
                "ID": f"{RULE_PREFIX}expire-deleted-versions",
                "Filter": {"Prefix": f"{archive.prefix}/" if archive.prefix else ""},
                "Status": "Enabled",
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            }
        )
    for bucket_rules in rules.values():
        bucket_rules.append(
            {
                "ID": f"{RULE_PREFIX}abort-incomplete-uploads",
                "Filter": {"Prefix": s3.prefix + "/" if s3.prefix else ""},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        )
    return rules


def apply_rules(client: Any, bucket: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace this project's rules on `bucket`, keeping everyone else's; returns the result."""
    try:
        existing = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    merged = [rule for rule in existing if not rule.get("ID", "").startswith(RULE_PREFIX)] + rules
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": merged}
    )
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apply", action="store_true", help="write the rules to the buckets")
    options = parser.parse_args(argv)
    try:
        config = load_config()
        rules = lifecycle_rules(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(rules, indent=2))
    if options.apply:
        clients = bucket_clients(config)
        for bucket, bucket_rules in rules.items():
            apply_rules(clients[bucket], bucket, bucket_rules)
            print(f"applied {len(bucket_rules)} rules to s3://{bucket}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
