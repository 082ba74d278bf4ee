"""The S3 lifecycle rules: derived from the config, applied to a bucket, others' rules kept."""

import boto3
import pytest

from backup_pipelines.core.config import ConfigError, load_config
from backup_pipelines.core.lifecycle import apply_rules, lifecycle_rules, main


def test_rules_match_retention_and_apply_beside_existing_ones(write_config, s3_endpoint, bucket):
    write_config(
        storage={
            "s3": {
                "bucket": bucket,
                "endpoint_url": s3_endpoint,
                "prefix": "pg",
                "archive_transition_days": 30,
                "archive_transition_storage_class": "GLACIER_IR",
            }
        },
        retention={"dump_days": 3},
    )
    rules = lifecycle_rules(load_config())[bucket]
    by_id = {rule["ID"]: rule for rule in rules}
    assert by_id["backup_pipelines-expire-dumps"]["Filter"] == {"Prefix": "pg/dumps/"}
    assert by_id["backup_pipelines-expire-dumps"]["Expiration"] == {"Days": 10}
    transition = by_id["backup_pipelines-archive-to-glacier_ir"]
    assert transition["Filter"]["And"]["Prefix"] == "pg/archive/"
    assert transition["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}]
    abort = by_id["backup_pipelines-abort-incomplete-uploads"]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    theirs = {
        "ID": "someone-elses",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 90},
    }
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [theirs]})
    assert main(["--apply"]) == 0
    assert main(["--apply"]) == 0  # again: replaced, not duplicated
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted(rule["ID"] for rule in stored) == sorted(["someone-elses", *by_id])
    assert apply_rules(s3, bucket, []) == [theirs]  # ours removed, theirs untouched


def test_local_storage_has_no_lifecycle(write_config):
    write_config()
    with pytest.raises(ConfigError, match="lifecycle rules are for S3 storage"):
        lifecycle_rules(load_config())
    assert main([]) == 2


def test_object_locked_archives_expire_deleted_versions(write_config, s3_endpoint):
    bucket = "locked-lifecycle"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    storage = {"bucket": bucket, "endpoint_url": s3_endpoint, "object_lock": {"mode": "COMPLIANCE"}}
    write_config(storage={"s3": storage})
    by_id = {rule["ID"]: rule for rule in lifecycle_rules(load_config())[bucket]}
    expire = by_id["backup_pipelines-expire-deleted-versions"]
    assert expire["Filter"] == {"Prefix": "archive/"}
    assert expire["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert main(["--apply"]) == 0
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert "backup_pipelines-expire-deleted-versions" in {rule["ID"] for rule in stored}
