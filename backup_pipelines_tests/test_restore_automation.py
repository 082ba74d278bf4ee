"""When restore tests and the runbook run: the weekly schedule and the two sensors."""

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    build_schedule_context,
    build_sensor_context,
)

from backup_pipelines_tests.helpers import (
    definitions_for,
    failure_messages,
    run_backup,
    run_restore_test_job,
    today,
)


def tick(defs, instance, name: str, cursor: str | None):
    sensor = defs.resolve_sensor_def(name)
    context = build_sensor_context(
        instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
    )
    result = sensor.evaluate_tick(context)
    return result.run_requests or [], result.cursor


def test_weekly_schedule_restore_tests_every_database(write_config, instance):
    defs = definitions_for(write_config(restore_test={"schedule": "0 3 * * 0"}))
    schedule = defs.resolve_schedule_def("weekly_restore_test_schedule")
    assert schedule.cron_schedule == "0 3 * * 0" and schedule.execution_timezone == "UTC"
    assert schedule.job_name == "restore_test"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    context = build_schedule_context(
        instance=instance,
        scheduled_execution_time=dt.datetime(2026, 11, 22, 3, tzinfo=dt.UTC),
        repository_def=defs.get_repository_def(),
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    config = request.run_config["ops"]["plan_restore_tests"]["config"]
    assert config == {"databases": [], "partition": None}


def test_new_archive_sensor_requests_a_restore_test_per_new_archive(
    write_config, cluster, instance
):
    defs = definitions_for(write_config(restore_test={"test_each_new_archive": True}))
    name = "restore_test_new_archives_sensor"
    assert defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    assert run_backup(defs, instance).success

    requests, cursor = tick(defs, instance, name, None)
    assert requests == []  # archives verified before the sensor started are not re-tested
    assert run_backup(defs, instance, databases=("agentic",)).success
    (request,), cursor = tick(defs, instance, name, cursor)
    config = request.run_config["ops"]["plan_restore_tests"]["config"]
    assert config == {"databases": ["agentic"], "partition": today()}
    assert tick(defs, instance, name, cursor)[0] == []

    result = defs.resolve_job_def("restore_test").execute_in_process(
        run_config=request.run_config, instance=instance, resources=defs.resources
    )
    assert result.success, failure_messages(result)


def test_new_archive_sensor_is_off_unless_configured(write_config):
    defs = definitions_for(write_config())
    sensor = defs.resolve_sensor_def("restore_test_new_archives_sensor")
    assert sensor.default_status == DefaultSensorStatus.STOPPED


def test_runbook_sensor_follows_verifications_and_restore_tests(write_config, instance):
    defs = definitions_for(write_config())
    name = "recovery_runbook_sensor"
    assert defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    assert run_backup(defs, instance).success
    (request,), cursor = tick(defs, instance, name, None)
    assert request.job_name in (None, "refresh_recovery_runbook")
    assert tick(defs, instance, name, cursor)[0] == []
    assert run_restore_test_job(defs, instance, databases=["langfuse"]).success
    assert len(tick(defs, instance, name, cursor)[0]) == 1
