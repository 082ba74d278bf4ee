"""Verification rules that need no backup: the size-change warning and the pg_dump version a
server needs."""

import pytest
from dagster import AssetCheckSeverity

from backup_pipelines.core.common.client_tools import find_client_tools, require_pg_dump_for
from backup_pipelines.core.common.postgres_client import PostgresError
from backup_pipelines.core.postgres.verification import check_size_change
from backup_pipelines.defs.shared import severity_of


def test_size_change_warns_beyond_threshold():
    assert check_size_change(1000, [], 0.5).passed
    assert check_size_change(1400, [1000, 1000, 900], 0.5).passed
    shrunk = check_size_change(100, [1000, 1100, 900], 0.5)
    assert not shrunk.passed and severity_of(shrunk.name) == AssetCheckSeverity.WARN
    assert shrunk.metadata["change_fraction"] == -0.9
    assert not check_size_change(2600, [1000, 1000], 0.5).passed


def test_old_pg_dump_is_refused_with_the_needed_version():
    tools = find_client_tools(None)
    require_pg_dump_for(tools, tools.major_version, "agentic")
    with pytest.raises(PostgresError, match=r"pg_dump 99 or newer is needed"):
        require_pg_dump_for(tools, 99, "agentic")
