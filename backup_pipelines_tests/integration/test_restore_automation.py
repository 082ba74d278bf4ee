"""When restore tests and the runbook run: the weekly schedule and the two sensors."""

import datetime as dt

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    build_schedule_context,
)

from backup_pipelines import names
from backup_pipelines_tests.support.config import today, yesterday
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    record_check_evaluations,
    run_backup,
    run_restore_test_job,
    sensor_tick,
)


def restore_tests_requested(request) -> list[str]:
    return sorted(key.path[1] for key in request.asset_selection)


def test_weekly_schedule_restore_tests_each_newest_verified_archive(write_config, instance):
    defs = definitions_for(
        write_config(start_date=yesterday(), restore_test={"schedule": "0 3 * * 0"})
    )
    schedule = defs.resolve_schedule_def(names.WEEKLY_RESTORE_TEST_SCHEDULE)
    assert schedule.cron_schedule == "0 3 * * 0" and schedule.execution_timezone == "UTC"
    assert schedule.job_name == "restore_test"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING

    def evaluate():
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime.now(dt.UTC),
            repository_def=defs.get_repository_def(),
        )
        return schedule.evaluate_tick(context)

    assert evaluate().run_requests == []  # nothing verified yet: nothing to test
    # langfuse's newest verified archive is yesterday's (as recorded; dumps are only taken
    # today), agentic's today's: one run per day.
    langfuse = AssetKey(["postgres", "langfuse", "verification"])
    record_check_evaluations(
        instance, langfuse, (names.ARCHIVE_CHECKSUM, names.ARCHIVE_CONTENTS), yesterday()
    )
    assert run_backup(defs, instance, databases=("agentic",)).success
    older, newer = sorted(evaluate().run_requests, key=lambda request: request.partition_key)
    assert (older.partition_key, restore_tests_requested(older)) == (yesterday(), ["langfuse"])
    assert (newer.partition_key, restore_tests_requested(newer)) == (today(), ["agentic"])
    result = run_restore_test_job(defs, instance, ["agentic"], newer.partition_key)
    assert result.success, failure_messages(result)


def test_new_archive_sensor_requests_a_restore_test_per_new_archive(
    write_config, cluster, instance
):
    defs = definitions_for(write_config(restore_test={"test_each_new_archive": True}))
    name = names.NEW_ARCHIVE_RESTORE_TEST_SENSOR
    assert defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    assert run_backup(defs, instance).success

    requests, cursor = sensor_tick(defs, instance, name, None)
    assert requests == []  # archives verified before the sensor started are not re-tested
    assert run_backup(defs, instance, databases=("agentic",)).success
    (request,), cursor = sensor_tick(defs, instance, name, cursor)
    assert request.job_name in (None, "restore_test")
    assert (request.partition_key, restore_tests_requested(request)) == (today(), ["agentic"])
    assert sensor_tick(defs, instance, name, cursor)[0] == []  # each archive once

    result = run_restore_test_job(defs, instance, ["agentic"], request.partition_key)
    assert result.success, failure_messages(result)
    assert instance.get_materialized_partitions(
        AssetKey(["postgres", "agentic", "restore_test"])
    ) == {today()}


def test_new_archive_sensor_is_off_unless_configured(write_config):
    defs = definitions_for(write_config())
    sensor = defs.resolve_sensor_def(names.NEW_ARCHIVE_RESTORE_TEST_SENSOR)
    assert sensor.default_status == DefaultSensorStatus.STOPPED


def test_runbook_sensor_follows_verifications_and_restore_tests(write_config, instance):
    defs = definitions_for(write_config())
    name = names.RUNBOOK_SENSOR
    assert defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    assert run_backup(defs, instance).success
    (request,), cursor = sensor_tick(defs, instance, name, None)
    assert request.job_name in (None, "refresh_recovery_runbook")
    assert sensor_tick(defs, instance, name, cursor)[0] == []
    assert run_restore_test_job(defs, instance, databases=["langfuse"]).success
    assert len(sensor_tick(defs, instance, name, cursor)[0]) == 1
