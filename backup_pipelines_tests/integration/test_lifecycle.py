"""The S3 lifecycle rules: derived from the config, applied to a bucket, others' rules kept."""

import boto3
import pytest

from backup_pipelines.core.common.config import ConfigError, load_config
from backup_pipelines.core.retention.lifecycle import apply_rules, lifecycle_rules, main


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
    with pytest.raises(ConfigError, match=r"to S3 storage only, not storage\.local"):
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


def test_source_buckets_get_their_declared_rules_beside_everyone_elses(
    write_config, s3_endpoint, bucket
):
    """Rules for the application's own buckets: printed and applied with the backup bucket's,
    on the bucket they name; another party's rule there is kept, re-applying replaces ours."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    media = f"media-{bucket}"
    s3.create_bucket(Bucket=media)
    theirs = {"ID": "cdn-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled"}
    theirs["Expiration"] = {"Days": 14}
    s3.put_bucket_lifecycle_configuration(Bucket=media, LifecycleConfiguration={"Rules": [theirs]})
    lifecycle = [
        {"name": "originals", "prefix": "originals/", "expire_days": 90},
        {
            "name": "processed",
            "prefix": "processed/",
            "transition_days": 30,
            "storage_class": "GLACIER_IR",
            "expire_days": 365,
        },
    ]
    write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
        buckets={
            "media": {"bucket": media, "lifecycle": lifecycle},
            # The backup bucket itself as a source: both sets of rules land on it together.
            "own": {"bucket": bucket, "prefix": "shared/", "lifecycle": [lifecycle[0]]},
        },
    )
    rules = lifecycle_rules(load_config())
    assert rules[media] == [
        {
            "ID": "backup_pipelines-media-originals",
            "Filter": {"Prefix": "originals/"},
            "Status": "Enabled",
            "Expiration": {"Days": 90},
        },
        {
            "ID": "backup_pipelines-media-processed",
            "Filter": {"Prefix": "processed/"},
            "Status": "Enabled",
            "Transitions": [{"Days": 30, "StorageClass": "GLACIER_IR"}],
            "Expiration": {"Days": 365},
        },
    ]
    assert "backup_pipelines-own-originals" in {rule["ID"] for rule in rules[bucket]}
    assert "backup_pipelines-expire-dumps" in {rule["ID"] for rule in rules[bucket]}

    assert main(["--apply"]) == 0
    assert main(["--apply"]) == 0  # again: replaced, not duplicated
    stored = s3.get_bucket_lifecycle_configuration(Bucket=media)["Rules"]
    assert [rule["ID"] for rule in stored] == [
        "cdn-logs",
        "backup_pipelines-media-originals",
        "backup_pipelines-media-processed",
    ]
    assert stored[0]["Expiration"] == {"Days": 14}  # theirs, untouched
    assert stored[2]["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}]
    on_backup_bucket = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {rule["ID"] for rule in on_backup_bucket} == {rule["ID"] for rule in rules[bucket]}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "x", "prefix": "a/"}, "rule 'x': give transition_days, expire_days or both"),
        (
            {"name": "x", "transition_days": 30},
            "rule 'x': transition_days and storage_class go together",
        ),
        (
            {"name": "x", "transition_days": 30, "storage_class": "GLACIER", "expire_days": 7},
            "rule 'x': expire_days (7) must come after transition_days (30)",
        ),
        ({"name": "x", "transition_days": 1, "storage_class": "COLD"}, "storage_class"),
        ({"name": "Bad Name", "expire_days": 1}, "name"),
    ],
)
def test_a_wrong_source_lifecycle_rule_is_named(write_config, s3_endpoint, bucket, rule, message):
    write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
        buckets={"media": {"bucket": "acme-uploads", "lifecycle": [rule]}},
    )
    with pytest.raises(ConfigError) as refused:
        load_config()
    assert "buckets.media.lifecycle" in str(refused.value) and message in str(refused.value)


def test_repeated_source_rule_names_are_refused(write_config, s3_endpoint, bucket):
    rule = {"name": "originals", "expire_days": 90}
    write_config(
        storage={"s3": {"bucket": bucket, "endpoint_url": s3_endpoint}},
        buckets={"media": {"bucket": "acme-uploads", "lifecycle": [rule, rule]}},
    )
    with pytest.raises(ConfigError, match="lifecycle rule names repeat: originals, originals"):
        load_config()
