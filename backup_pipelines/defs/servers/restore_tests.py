"""Where point-in-time recovery is proven: pg_server/<server>/pitr_restore_test, one partition
per day a restore to a moment was shown to work. The restore, the markers and the proof are
core/servers/pitr_test.py (run_pitr_restore_test)."""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    PartitionsDefinition,
    asset,
)

from backup_pipelines import names
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.servers.checks import pitr_failure_outcome, pitr_outcome
from backup_pipelines.core.servers.errors import PitrError, RestoreStageError
from backup_pipelines.core.servers.pgbackrest import PgBackRestError
from backup_pipelines.core.servers.pitr_test import run_pitr_restore_test
from backup_pipelines.defs.resources import BackupSettings
from backup_pipelines.defs.shared import check_result, per_day_check_spec


def pitr_restore_test_asset(
    server: str, partitions: PartitionsDefinition, repo: int = 1
) -> AssetsDefinition:
    """The PITR restore test from repository `repo`; from the second it is the failover drill,
    run with that repository's settings and credentials alone."""
    key = names.server_key(server, names.repository_step(names.PITR_RESTORE_TEST, repo))
    source = (
        " from its second repository alone (the failover drill: repository 1's settings and "
        "keys are not used)"
        if repo > 1
        else ""
    )

    @asset(
        key=key,
        group_name=names.server_group(server),
        partitions_def=partitions,
        deps=[names.server_key(server, names.repository_step(names.BASE_BACKUP, repo))],
        pool=names.BASE_BACKUP_POOL,
        kinds={"postgres", "pgbackrest"},
        description=f"Server {server} restored{source} to a moment on a scratch port: a row is "
        "committed, the moment noted, another row committed; the copy must hold the first and "
        "not the second, and every database's tables must read. The copy is always deleted.",
        check_specs=[
            per_day_check_spec(
                names.PITR_RESTORE_PROVEN,
                key,
                partitions,
                "The copy recovered to the target time: the row committed before it present, "
                "the one after it absent, every database answering. Metadata: the RTO, the "
                "achieved recovery point against the target, the WAL replayed.",
            )
        ],
    )
    def pitr_restore_test(
        context: AssetExecutionContext, settings: BackupSettings
    ) -> Iterator[object]:
        try:
            report = run_pitr_restore_test(
                settings.server_engine(server, repo=repo, alone=repo > 1),
                settings.server_connection(server),
                settings.scratch_place(server),
            )
        except RestoreStageError as error:
            failed = pitr_failure_outcome(error)
            yield check_result(failed, key)  # recorded first: the history keeps the evidence
            raise Failure(failed.description) from None
        except (PgBackRestError, PostgresError, PitrError) as error:
            message = str(error)
            raise Failure(
                message if message.startswith("server") else f"server {server!r}: {message}"
            ) from None
        outcome = pitr_outcome(report)
        if not outcome.passed:
            yield check_result(outcome, key)  # recorded first: the history keeps the evidence
            raise Failure(outcome.description)
        context.log.info(outcome.description)
        yield MaterializeResult(
            metadata={
                "restore_duration_seconds": round(report.total_seconds, 3),
                "recovery_point_error_seconds": outcome.metadata["recovery_point_error_seconds"],
            },
            check_results=[check_result(outcome, key)],
        )

    return pitr_restore_test
