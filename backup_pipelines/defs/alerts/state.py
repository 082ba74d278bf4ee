"""Alert bookkeeping: which problems were announced, which cleared, what is still to deliver.

The state lives in the alerts sensor's cursor, so each problem is announced once, its recovery
once, and a message a notifier failed to deliver is retried on the next tick.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from backup_pipelines.defs.alerts.health import Problem
from backup_pipelines.defs.alerts.notifiers import Notifier, NotifierError

MAX_OUTBOX = 200  # undelivered messages kept for retry; older ones are dropped, and said so


@dataclass
class AlertState:
    watching_since: str  # ISO time of the first tick: "nothing ran at all" counts from here
    runs_after: str  # failed runs up to this time are announced
    open: dict[str, str] = field(default_factory=dict)  # announced problem key -> its title
    outbox: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_cursor(cls, cursor: str | None, now: dt.datetime) -> AlertState:
        if not cursor:
            return cls(watching_since=now.isoformat(), runs_after=now.isoformat())
        return cls(**json.loads(cursor))

    def to_cursor(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def record(self, problems: list[Problem], now: dt.datetime, notifiers: list[str]) -> None:
        """Queue a message for each new problem and each cleared one."""
        current = {problem.key: problem for problem in problems}
        for problem in problems:
            if problem.recovers and problem.key in self.open:
                continue
            self._queue(
                "problem", problem.key, problem.title, problem.details, problem.link, now, notifiers
            )
            if problem.recovers:
                self.open[problem.key] = problem.title
        for key, title in list(self.open.items()):
            if key not in current:
                self._queue("recovered", key, title, "", "", now, notifiers)
                del self.open[key]

    def _queue(
        self,
        kind: str,
        key: str,
        title: str,
        details: str,
        link: str,
        now: dt.datetime,
        notifiers: list[str],
    ) -> None:
        if notifiers:
            self.outbox.append(
                {
                    "kind": kind,
                    "key": key,
                    "title": title,
                    "details": details,
                    "link": link,
                    "at": now.isoformat(),
                    "pending": list(notifiers),
                }
            )

    def deliver(self, notifiers: list[Notifier]) -> list[str]:
        """Send what is pending; returns the failures (kept for the next tick)."""
        by_name = {notifier.name: notifier for notifier in notifiers}
        failures = []
        for message in self.outbox:
            for name in list(message["pending"]):
                notifier = by_name.get(name)
                try:
                    if notifier is not None:  # a notifier taken out of the config is skipped
                        notifier.send({k: v for k, v in message.items() if k != "pending"})
                    message["pending"].remove(name)
                except NotifierError as error:
                    failures.append(f"{error} (will retry: {message['title']})")
        self.outbox = [message for message in self.outbox if message["pending"]]
        if len(self.outbox) > MAX_OUTBOX:
            dropped = len(self.outbox) - MAX_OUTBOX
            self.outbox = self.outbox[dropped:]
            failures.append(f"dropped the {dropped} oldest undelivered alerts")
        return failures
