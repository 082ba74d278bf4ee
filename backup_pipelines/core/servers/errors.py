"""What goes wrong with a server's backup or recovery: a refusal (`PitrError`) and a restore to
a moment that failed at one stage, with the restored copy's own log lines as evidence."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the window module raises these errors
    from backup_pipelines.core.servers.wal import Gap
    from backup_pipelines.core.servers.window import RecoveryWindow


class PitrError(RuntimeError):
    """A server cannot be backed up or recovered as asked; the message says which and why."""


class RestoreStageError(PitrError):
    """A restore to a moment failed at one `stage` (window, restore, start, replay, promotion,
    validation): why, and the restored copy's own last log lines."""

    def __init__(self, server: str, stage: str, reason: str, log_lines: list[str] | None = None):
        self.server, self.stage, self.reason = server, stage, reason
        self.log_lines = log_lines or []
        self.target: dt.datetime | None = None
        self.window: RecoveryWindow | None = None
        severe = [
            line for line in self.log_lines if any(f" {level}: " in line for level in _SEVERE)
        ]
        tail = " | ".join((severe or self.log_lines)[-3:])
        super().__init__(f"server {server!r}: {reason}" + (f": {tail}" if tail else ""))

    def about(
        self, target: dt.datetime, window: RecoveryWindow | None, gap: Gap | None
    ) -> RestoreStageError:
        """The same failure of a restore to `target`, with the window and the gap (if any)
        that explain it."""
        missing = f"; the repository is missing {gap.segments()}: {gap.unreachable()}"
        error = RestoreStageError(
            self.server, self.stage, self.reason + (missing if gap else ""), self.log_lines
        )
        error.target, error.window = target, window
        return error


_SEVERE = ("FATAL", "PANIC", "ERROR")
