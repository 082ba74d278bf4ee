"""The configuration contract and the Dagster definitions built from it."""

import datetime as dt
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, build_schedule_context

from backup_pipelines import names
from backup_pipelines.core.common.config import ConfigError, expand_env, load_config
from backup_pipelines.core.servers.pgbackrest import repository_from_config
from backup_pipelines_tests.support.runs import definitions_for

MINIMAL = {
    "storage": {"local": {"path": "./b"}},
    "databases": {"agentic": {"url": "postgresql://u@h:5433/agentic"}},
}


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "backup_pipelines.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_minimal_config_and_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.schedule == "0 2 * * *" and config.compression == "zstd"
    assert config.local_path("./b") == tmp_path / "b"  # relative to the file's folder


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"storage": {}},
            "storage: Value error, give exactly one of storage.s3, storage.azure, storage.gcs "
            "or storage.local",
        ),
        ({"storage": {"s3": {"bucket": "abc"}, "local": {"path": "x"}}}, "exactly one"),
        ({"storage": {"s3": {"prefix": "x"}}}, "storage.s3.bucket: Field required"),
        ({"storage": {"s3": {"bucket": "abc", "sse": "rot13"}}}, "storage.s3.sse"),
        ({"storage": {"s3": {"bucket": "abc", "kms_key_id": "k"}}}, "set sse: aws:kms"),
        ({"databases": {}}, "databases: Dictionary should have at least 1 item"),
        ({"databases": {"Bad-Name": {"url": "x"}}}, "databases: Value error, name 'Bad-Name'"),
        ({"buckets": {"media": {"bucket": "acme-media"}}}, "configure storage.s3"),
        ({"databases": {"agentic": {}}}, "databases.agentic.url: Field required"),
        ({"schedule": "every day"}, "schedule: Value error, 'every day' is not a valid cron"),
        ({"compression": "lzma"}, "compression"),
        ({"retention_days": 3}, "retention_days: Extra inputs are not permitted"),
        ({"restore_test": {"schedule": "sundays"}}, "restore_test.schedule: Value error"),
        ({"restore_test": {"jobs": 0}}, "restore_test.jobs: Input should be greater than"),
        (
            {"retention": {"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}},
            "retention: Value error, every rule (daily, weekly, monthly, yearly) is 0",
        ),
        (
            {
                "databases": {
                    "a": {"url": "x", "retention": {"daily": 0, "weekly": 0, "monthly": 0}}
                }
            },
            "databases.a.retention: Value error, every rule",
        ),
        ({"retention": {"min_keep": 0}}, "retention.min_keep: Input should be greater than"),
        ({"storage": {"local": {"path": "x"}, "capacity_gb": -1}}, "storage.capacity_gb"),
        (
            {"databases": {"a": {"url": "x", "restore_assertions": [{"name": "n"}]}}},
            "databases.a.restore_assertions.0.sql: Field required",
        ),
        (
            {"replica": {}},
            "replica: Value error, give exactly one of replica.s3, replica.azure, replica.gcs "
            "or replica.local",
        ),
        (
            {"replica": {"s3": {"bucket": "dr-copy", "access_key_id": "AKIA123"}}},
            "replica.s3: Value error, access_key_id must be an environment reference",
        ),
        (
            {"replica": {"s3": {"bucket": "dr-copy", "access_key_id": "${K}"}}},
            "access_key_id and secret_access_key go together",
        ),
        ({"replica": {"local": {"path": "x"}, "drill_schedule": "monthly"}}, "replica.drill_"),
        (
            {
                "replica": {
                    "local": {"path": "x"},
                    "retention": {"daily": 0, "weekly": 0, "monthly": 0},
                }
            },
            "replica.retention: Value error, every rule",
        ),
        ({"replica": {"local": {"path": "x"}, "max_age_days": 0}}, "replica.max_age_days"),
        (
            {"objectives": {"rpo_minutes": "a day", "rto_minutes": 60}},
            "objectives.rpo_minutes: Input should be a valid number",
        ),
        (
            {"objectives": {"rpo_minutes": 1500, "rto_minutes": 0}},
            "objectives.rto_minutes: Input should be greater than 0",
        ),
        (
            {
                "databases": {
                    "agentic": {"url": "x", "objectives": {"rpo_minutes": -5, "rto_minutes": 9}}
                }
            },
            "databases.agentic.objectives.rpo_minutes: Input should be greater than 0",
        ),
        (
            {"objectives": {"rpo_minutes": 1500}},
            "databases.agentic.objectives: rto_minutes set neither there nor in objectives:",
        ),
        (
            {"objectives": {"rpo_minutes": 15, "rto_minutes": 60}},
            "databases.agentic.objectives.rpo_minutes: 15 min cannot be met: agentic is backed "
            "up by dumps on '0 2 * * *' (up to 1440 min apart) and is on no archiving server; "
            "set rpo_minutes to at least 1440",
        ),
        (
            {
                "schedule": "0 */6 * * *",
                "databases": {
                    "billing": {"url": "x", "objectives": {"rpo_minutes": 60, "rto_minutes": 9}}
                },
            },
            "databases.billing.objectives.rpo_minutes: 60 min cannot be met: billing is backed "
            "up by dumps on '0 */6 * * *' (up to 360 min apart)",
        ),
        (
            {"configs": {"app": {"files": ["/etc/app.ini"], "command": {"argv": ["x"]}}}},
            "configs.app: Value error, give exactly one of files, command or http (found files, "
            "command)",
        ),
        (
            {"configs": {"app": {"command": {"argv": ["curl", "-u", "me:${APP_TOKEN}"]}}}},
            "configs.app.command.argv: Value error, argv must not contain ${VAR} references",
        ),
        (
            {"configs": {"app": {"http": {"url": "ftp://example.com/export"}}}},
            "configs.app.http.url: String should match pattern",
        ),
        (
            {"configs": {"app": {"files": ["/etc/app.ini"], "expect": ["[database"]}}},
            "configs.app: Value error, '[database' is not a regular expression",
        ),
        (
            {
                "servers": {
                    "main": {"url": "x", "data_directory": "/d", "pgbackrest": {"path": "/r"}}
                },
                "configs": {"main_postgresql": {"files": ["/etc/app.ini"]}},
            },
            "configs.main_postgresql: the name is taken by the source every server gets",
        ),
    ],
)
def test_invalid_config_names_the_key(tmp_path, change, expected):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, {**MINIMAL, **change}))
    assert expected in str(error.value)
    assert str(tmp_path) in str(error.value)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="BACKUP_PIPELINES_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_env_expansion_happens_at_use(monkeypatch):
    monkeypatch.setenv("DB_PW", "s3cret")
    assert expand_env("postgresql://u:${DB_PW}@h/db", "databases.x.url") == (
        "postgresql://u:s3cret@h/db"
    )
    monkeypatch.delenv("DB_PW")
    with pytest.raises(ConfigError, match=r"databases.x.url: environment variable DB_PW"):
        expand_env("postgresql://u:${DB_PW}@h/db", "databases.x.url")


def test_definitions_have_a_chain_group_and_pool_per_database(write_offline_config):
    defs = definitions_for(write_offline_config(schedule="30 1 * * *"))
    graph = defs.resolve_asset_graph()
    for database in ("agentic", "langfuse"):
        dump, archive, verification = (
            AssetKey(["postgres", database, s]) for s in ("dump", "archive", "verification")
        )
        assert graph.get(archive).parent_keys == {dump}
        assert graph.get(verification).parent_keys == {archive}
        assert graph.get(dump).group_name == f"postgres_{database}"
    pools = {
        defs.resolve_assets_def(AssetKey(["postgres", db, "dump"])).op.pool
        for db in ("agentic", "langfuse")
    }
    assert len(pools) == 1 and next(iter(pools)).startswith("pg_dump_127_0_0_1_")

    schedule = defs.resolve_schedule_def(names.DAILY_BACKUP_SCHEDULE)
    assert schedule.cron_schedule == "30 1 * * *" and schedule.execution_timezone == "UTC"
    tick = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)
    request = schedule.evaluate_tick(
        build_schedule_context(
            scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
    )
    assert [r.partition_key for r in request.run_requests] == ["2026-03-29"]


def test_daily_backup_leaves_restore_tests_to_their_own_job(write_offline_config):
    defs = definitions_for(write_offline_config())
    daily = defs.resolve_job_def("daily_backup").asset_layer.asset_graph.asset_check_keys
    assert {key.name for key in daily} == {
        names.DUMP_COMPLETE,
        names.ARCHIVE_CHECKSUM,
        names.ARCHIVE_CONTENTS,
        names.SIZE_CHANGE,
    }
    all_checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert names.RESTORED_DATA_MATCHES in all_checks
    jobs = ("restore_test", "restore_database", "refresh_recovery_runbook", "prune_backups")
    for job in (*jobs, "measure_storage"):
        assert defs.resolve_job_def(job).name == job


@pytest.mark.parametrize(
    "repositories",
    [
        {"path": "/srv/pitr", "repo2": {"path": "/srv/pitr"}},
        {"s3": {"bucket": "pitr"}, "repo2": {"s3": {"bucket": "pitr"}}},
    ],
)
def test_a_second_pgbackrest_repository_in_the_same_place_is_refused(tmp_path, repositories):
    server = {"url": "postgresql://u@db1/postgres", "data_directory": "/x"}
    document = {**MINIMAL, "servers": {"db1": {**server, "pgbackrest": repositories}}}
    config = load_config(write(tmp_path, document))
    with pytest.raises(ConfigError, match="repo2 is the same place as repository 1"):
        repository_from_config(config, "db1")
    moved = {**repositories, "repo2": {"path": "/mnt/elsewhere"}}
    config = load_config(
        write(tmp_path, {**document, "servers": {"db1": {**server, "pgbackrest": moved}}})
    )
    assert repository_from_config(config, "db1").count == 2
    assert repository_from_config(config, "db1", only=2).options["repo1-path"] == "/mnt/elsewhere"


def test_objectives_merge_per_database_and_server(tmp_path):
    """A database on an archiving server may promise less than a dump's interval; its own
    objectives override the global ones setting by setting."""
    server = {
        "url": "postgresql://u@h/postgres",
        "data_directory": "/srv/pg",
        "pgbackrest": {"path": "/srv/repo"},
        "objectives": {"rpo_minutes": 5},
    }
    document = {
        **MINIMAL,
        "databases": {"agentic": {"url": "x", "server": "db1", "objectives": {"rpo_minutes": 15}}},
        "servers": {"db1": server},
        "objectives": {"rpo_minutes": 1500, "rto_minutes": 60, "severity": "error"},
    }
    config = load_config(write(tmp_path, document))
    database = config.objectives_for("databases", "agentic")
    assert (database.rpo_minutes, database.rto_minutes, database.severity) == (15, 60, "error")
    assert config.objectives_for("servers", "db1").rpo_minutes == 5
    assert load_config(write(tmp_path, MINIMAL)).objectives_for("databases", "agentic") is None
