"""Recovery objectives against the real chain: a server whose archiving breaks for longer than
its RPO fails rpo_met with the figures, with the database declared on it, and so does a
database whose newest verified archive is older than its RPO; archiving again and a new backup
pass the next evaluation and clear the alert. A restore test slower than the RTO fails rto_met
until the promise matches what the tests prove."""

import time

import pandas as pd
import psycopg
import pytest
import yaml

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import Connection
from backup_pipelines.core.servers.archiver import wait_until_archived
from backup_pipelines.defs.alerts.health import check_problems
from backup_pipelines.defs.alerts.metrics import objective_lines
from backup_pipelines_tests.support.archiving import archiving_server
from backup_pipelines_tests.support.config import (
    BACKUP_PASSWORD,
    PITR_PASSWORD_ENV,
    RESTORE_TEST_PASSWORD,
    today,
)
from backup_pipelines_tests.support.runs import (
    definitions_for,
    failure_messages,
    materialize_runbook,
    run_backup,
    run_restore_test_job,
    sensor_tick,
)

SERVER = "main"
RPO_MINUTES = 0.5
DUMP_RPO_MINUTES = 1
ON_SERVER, SLOW = "agentic", "langfuse"


def switched_and_archived(server) -> None:
    """Everything written so far is in the repository: the archive lag is (about) zero."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("INSERT INTO ledger (phase) VALUES ('objectives')")
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    wait_until_archived(SERVER, Connection.from_url(SERVER, server.url()), segment)


def set_archive_command(server, command: str | None) -> None:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        if command is None:
            conn.execute("ALTER SYSTEM RESET archive_command")
        else:
            conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
        conn.execute("SELECT pg_reload_conf()")


def evaluate(config, instance) -> dict[str, object]:
    defs = definitions_for(config)
    result = defs.resolve_job_def(names.OBJECTIVES_JOB).execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert result.success, failure_messages(result)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def targets(evaluation) -> dict[str, dict]:
    return evaluation.metadata["targets"].value


def runbook_page(config, instance, home) -> str:
    materialize_runbook(definitions_for(config), instance)
    return next((home / "backups").rglob("recovery_runbook.html")).read_text()


def objective_alerts(instance) -> set[str]:
    problems = check_problems(instance, [], [], "http://ui")
    return {p.key for p in problems if names.RECOVERY_OBJECTIVES in p.key}


@pytest.fixture
def promising(cluster, monkeypatch):
    """A server archiving its WAL with its objectives, a database declared on it, another
    promising an RTO no restore test can meet."""
    with archiving_server(cluster, "objectives") as (server, config, home):
        for variable, value in (
            (PITR_PASSWORD_ENV, server.superuser_password),
            ("TEST_BACKUP_PASSWORD", BACKUP_PASSWORD),
            ("TEST_RESTORE_PASSWORD", RESTORE_TEST_PASSWORD),
        ):
            monkeypatch.setenv(variable, value)
        document = yaml.safe_load(config.read_text())
        document["databases"][ON_SERVER] |= {
            "server": SERVER,
            "objectives": {"rpo_minutes": RPO_MINUTES, "rto_minutes": 60},
        }
        document["schedule"] = "* * * * *"  # dumps every minute: a 1-minute RPO is possible
        document["databases"][SLOW]["objectives"] = {
            "rpo_minutes": DUMP_RPO_MINUTES,
            "rto_minutes": 0.001,
            "severity": "error",
        }
        document["servers"][SERVER]["objectives"] = {"rpo_minutes": RPO_MINUTES, "rto_minutes": 60}
        config.write_text(yaml.safe_dump(document))
        yield server, config, document, home


def test_objectives_fail_with_their_figures_and_pass_once_fixed(promising, instance):
    server, config, document, home = promising
    defs = definitions_for(config)
    for job in (names.SERVER_BACKUP_JOB, names.PITR_RESTORE_TEST_JOB):
        run = defs.resolve_job_def(job).execute_in_process(
            instance=instance, partition_key=today(), raise_on_error=False
        )
        assert run.success, failure_messages(run)
    requests, cursor = sensor_tick(defs, instance, names.OBJECTIVES_SENSOR, None)
    (request,) = requests  # the job evaluates the objectives
    assert request.run_key.startswith(f"{names.OBJECTIVES_JOB}_")
    assert sensor_tick(defs, instance, names.OBJECTIVES_SENSOR, cursor)[0] == []
    backed_up = run_backup(defs, instance, databases=(ON_SERVER, SLOW))
    dumped = time.monotonic()
    assert backed_up.success, failure_messages(backed_up)
    tested = run_restore_test_job(defs, instance, databases=(ON_SERVER, SLOW))
    assert tested.success, failure_messages(tested)
    assert len(sensor_tick(defs, instance, names.OBJECTIVES_SENSOR, cursor)[0]) == 1  # new evidence

    switched_and_archived(server)
    first = evaluate(config, instance)
    assert first[names.RPO_MET].passed, first[names.RPO_MET].description
    rto = first[names.RTO_MET]
    assert not rto.passed and rto.severity.value == "ERROR"
    slow = targets(rto)[f"database/{SLOW}"]
    assert not slow["met"] and slow["achieved_seconds"] > slow["promised_seconds"] == 0.06
    assert f"database/{SLOW}: RTO NOT met" in rto.description
    assert "restore test of " + today() in slow["basis"]
    server_rto = targets(rto)[f"server/{SERVER}"]
    assert server_rto["met"] and "PITR restore test" in server_rto["basis"]
    assert objective_alerts(instance) == {f"check:{names.RECOVERY_OBJECTIVES}:{names.RTO_MET}"}

    set_archive_command(server, "/bin/false")  # archiving breaks
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("INSERT INTO ledger (phase) VALUES ('not archived')")
            conn.execute("SELECT pg_switch_wal()")
        # Longer than the server's RPO, and than the dump-only database's since its dump.
        time.sleep(max(RPO_MINUTES * 60 + 2, dumped + DUMP_RPO_MINUTES * 60 + 2 - time.monotonic()))
        broken = evaluate(config, instance)
        page = runbook_page(config, instance, home)
        assert run_backup(defs, instance, databases=(SLOW,)).success  # a newer verified archive
        server_only = evaluate(config, instance)
    finally:
        set_archive_command(server, None)
    rpo = broken[names.RPO_MET]
    assert not rpo.passed and rpo.severity.value == "ERROR"  # SLOW says severity: error
    for target in (f"server/{SERVER}", f"database/{ON_SERVER}"):
        figures = targets(rpo)[target]
        assert not figures["met"], figures
        assert figures["achieved_seconds"] > RPO_MINUTES * 60, figures
        assert f"{target}: RPO NOT met" in rpo.description
    assert "archive lag now" in targets(rpo)[f"server/{SERVER}"]["basis"]
    dump_only = targets(rpo)[f"database/{SLOW}"]
    assert not dump_only["met"] and dump_only["achieved_seconds"] > DUMP_RPO_MINUTES * 60
    assert dump_only["basis"].startswith(f"the newest verified archive ({today()}), taken at")
    assert f"check:{names.RECOVERY_OBJECTIVES}:{names.RPO_MET}" in objective_alerts(instance)
    lines = objective_lines(instance)
    assert f'backup_pipelines_objective_met{{target="server/{SERVER}",objective="rpo"}} 0' in lines
    assert f"Not covered: database/{ON_SERVER}, database/{SLOW}, server/{SERVER}" in page

    still = server_only[names.RPO_MET]  # the dump-only database is covered again
    assert not still.passed and still.severity.value == "WARN"  # the default severity
    assert targets(still)[f"database/{SLOW}"]["met"]
    assert not targets(still)[f"server/{SERVER}"]["met"]

    switched_and_archived(server)  # archiving works again
    document["databases"][SLOW]["objectives"]["rto_minutes"] = 60  # a promise the tests prove
    config.write_text(yaml.safe_dump(document))
    fixed = evaluate(config, instance)
    assert all(check.passed for check in fixed.values()), [
        check.description for check in fixed.values() if not check.passed
    ]
    since = targets(fixed[names.RPO_MET])[f"server/{SERVER}"]["since"]
    assert since > targets(rpo)[f"server/{SERVER}"]["since"]
    assert objective_alerts(instance) == set()
    assert f'backup_pipelines_objective_met{{target="server/{SERVER}",objective="rpo"}} 1' in (
        objective_lines(instance)
    )
    page = runbook_page(config, instance, home)
    opening = page.index("Recovery objectives")
    assert opening < page.index("Before you start")  # the page opens with them
    assert "Every recovery objective is met" in page and 'class="bad"' not in page[opening:]

    audit = definitions_for(config).resolve_job_def(names.AUDIT_REPORT_JOB)
    assert audit.execute_in_process(instance=instance).success
    history = pd.read_csv(next((home / "backups").rglob("objectives.csv")))
    by_target = history[history["day"] == today()].set_index(["target", "objective"])
    missed = by_target.loc[(f"server/{SERVER}", "RPO")]
    assert not missed["met_all_day"] and missed["minutes_not_met"] > 0
    assert not by_target.loc[(f"database/{SLOW}", "RPO")]["met_all_day"]
    assert not by_target.loc[(f"database/{SLOW}", "RTO")]["met_all_day"]
