"""What a check concluded: the outcome every core check returns (the Dagster wiring turns it into
an asset check result) and an evaluation as Dagster recorded it (read back by reports)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckRecord:
    """A check evaluation as Dagster recorded it (read back by the runbook and reports)."""

    passed: bool
    description: str
    metadata: dict[str, Any]
    evaluated_at: dt.datetime
    run_id: str
