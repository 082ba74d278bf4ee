"""Recovery objectives: the RPO and RTO each database and server promises, against what the
newest evidence proves. Figures in, verdicts out; the records are read by defs/recovery.

The models behind the achieved figures:
- A database's RPO is the age of its newest verified recovery point: the newest archive whose
  integrity checks passed (its dump's start: the snapshot it holds), or, for a database on an
  archiving server, that server's own achieved RPO when it is smaller.
- A database's RTO is its newest passed restore test's duration, scaled by how much its newest
  verified archive has grown since the archive that test restored (restore time taken as
  proportional to size; never below the measured time).
- A server's RPO is the archive lag pg_stat_archiver shows now (WAL not yet in every repository
  is what a lost server takes with it); when the server cannot be reached, the lag at the
  newest observation plus the time since.
- A server's RTO is its newest passed PITR restore test's duration, plus replaying all the WAL
  written since the newest base backup's start (the worst moment in the window: the latest) at
  the replay rate that test measured.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass

from backup_pipelines.core.common.units import human_size

DATABASE = "database"
SERVER = "server"


@dataclass(frozen=True)
class Figure:
    """An achieved RPO or RTO, and what it rests on (with its numbers)."""

    seconds: float
    basis: str


@dataclass(frozen=True)
class Promise:
    rpo_minutes: float
    rto_minutes: float
    error: bool  # an objective not met is an ERROR (else a WARN)


@dataclass(frozen=True)
class Standing:
    """One database's or server's objectives at one moment: promised and achieved (None:
    nothing proves one yet, which does not meet any promise)."""

    kind: str  # DATABASE or SERVER
    name: str
    promise: Promise
    rpo: Figure | None
    rto: Figure | None

    @property
    def target(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def rpo_met(self) -> bool:
        return self.rpo is not None and self.rpo.seconds <= self.promise.rpo_minutes * 60

    @property
    def rto_met(self) -> bool:
        return self.rto is not None and self.rto.seconds <= self.promise.rto_minutes * 60

    def met(self, objective: str) -> bool:
        return self.rpo_met if objective == RPO else self.rto_met

    def figure(self, objective: str) -> Figure | None:
        return self.rpo if objective == RPO else self.rto

    def promised_seconds(self, objective: str) -> float:
        minutes = self.promise.rpo_minutes if objective == RPO else self.promise.rto_minutes
        return minutes * 60


RPO, RTO = "rpo", "rto"
OBJECTIVES = (RPO, RTO)


def point_age(now: dt.datetime, point: dt.datetime, basis: str) -> Figure:
    return Figure(max((now - point).total_seconds(), 0.0), basis)


def database_rpo(
    now: dt.datetime,
    verified: tuple[str, dt.datetime] | None,
    server: tuple[str, Figure] | None,
) -> Figure | None:
    """The age of the newest verified recovery point: the newest verified archive (`verified`:
    its day and the moment its snapshot was taken) or the archiving server's own RPO (`server`:
    its name and figure), whichever is younger."""
    figures = []
    if verified is not None:
        day, taken = verified
        figures.append(
            point_age(now, taken, f"the newest verified archive ({day}), taken at {_utc(taken)}")
        )
    if server is not None:
        name, figure = server
        figures.append(Figure(figure.seconds, f"its archiving server {name}: {figure.basis}"))
    return min(figures, key=lambda figure: figure.seconds, default=None)


def database_rto(
    test_seconds: float, tested_day: str, tested_bytes: int | None, newest_bytes: int | None
) -> Figure:
    """The newest passed restore test's duration, scaled by the archive's growth since."""
    if not tested_bytes or not newest_bytes:
        return Figure(test_seconds, f"restore test of {tested_day}: {test_seconds:.1f} s")
    growth = max(newest_bytes / tested_bytes, 1.0)
    seconds = test_seconds * growth
    return Figure(
        seconds,
        f"restore test of {tested_day}: {test_seconds:.1f} s for {human_size(tested_bytes)}; "
        f"the newest verified archive is {human_size(newest_bytes)} (x{growth:.2f}): "
        f"{seconds:.1f} s",
    )


def server_rpo_live(lag_seconds: float, last_archived: dt.datetime | None) -> Figure:
    when = f"; last segment archived {_utc(last_archived)}" if last_archived else ""
    return Figure(lag_seconds, f"archive lag now {lag_seconds:.0f} s (pg_stat_archiver{when})")


def server_rpo_recorded(now: dt.datetime, lag_seconds: float, observed: dt.datetime) -> Figure:
    """The server cannot be reached: what the newest observation proved, aged since."""
    seconds = lag_seconds + max((now - observed).total_seconds(), 0.0)
    return Figure(
        seconds,
        f"server unreachable now; archive lag {lag_seconds:.0f} s at the observation of "
        f"{_utc(observed)}, plus the time since",
    )


def server_rto(
    test_seconds: float,
    tested_at: dt.datetime,
    replay_bytes_per_second: float | None,
    wal_since_backup_bytes: int | None,
) -> Figure:
    """The newest passed PITR test's duration plus replaying the WAL since the newest base
    backup at the measured rate."""
    basis = f"PITR restore test of {_utc(tested_at)}: {test_seconds:.1f} s"
    if not replay_bytes_per_second or wal_since_backup_bytes is None:
        return Figure(test_seconds, f"{basis} (no replay rate measured yet)")
    replay = wal_since_backup_bytes / replay_bytes_per_second
    return Figure(
        test_seconds + replay,
        f"{basis}, plus {human_size(wal_since_backup_bytes)} of WAL since the newest base "
        f"backup at the {human_size(round(replay_bytes_per_second))}/s the tests replayed: "
        f"{replay:.1f} s",
    )


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: float) -> str:
    """12 s, 2.5 min, 25.0 h: the unit an operator compares with the promise."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def objectives_table_html(standings: list[Standing]) -> str:
    """ "Are we covered?": every target's promised and achieved RPO and RTO, red where not
    met, each achieved figure with what it rests on."""
    rows = []
    for standing in standings:
        cells = [f"<td>{html.escape(standing.target)}</td>"]
        for objective in OBJECTIVES:
            figure = standing.figure(objective)
            met = standing.met(objective)
            achieved = duration_text(figure.seconds) if figure else "unproven"
            basis = html.escape(figure.basis if figure else "nothing proves one yet")
            cells += [
                f"<td>{duration_text(standing.promised_seconds(objective))}</td>",
                f'<td class="{"ok" if met else "bad"}" title="{basis}">{achieved}'
                f"{'' if met else ' (not met)'}<br><small>{basis}</small></td>",
            ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    missed = [s.target for s in standings if not (s.rpo_met and s.rto_met)]
    verdict = (
        f'<p class="bad">Not covered: {html.escape(", ".join(missed))}.</p>'
        if missed
        else '<p class="ok">Every recovery objective is met.</p>'
    )
    return f"""<h2 id="objectives">Are we covered? Recovery objectives</h2>
{verdict}
<table><tr><th>database or server</th><th>RPO promised</th><th>RPO achieved</th>
<th>RTO promised</th><th>RTO achieved</th></tr>
{"".join(rows)}
</table>"""


@dataclass(frozen=True)
class DayOfObjective:
    """One day of one target's objective, as the evaluations recorded it."""

    day: str
    target: str
    objective: str
    seconds_not_met: float
    evaluations: int

    @property
    def met_all_day(self) -> bool:
        return self.seconds_not_met == 0


def history_by_day(
    evaluations: list[tuple[dt.datetime, str, dict[str, bool]]], until: dt.datetime
) -> list[DayOfObjective]:
    """Per UTC day, target and objective: how long it was not met. `evaluations` are (when,
    objective, {target: met}), any order; each verdict holds until that objective's next
    evaluation (the last until `until`). Days before the first evaluation are absent."""
    spans: dict[tuple[str, str, str], list[float]] = {}
    for objective in OBJECTIVES:
        ordered = sorted((at, met) for at, name, met in evaluations if name == objective)
        ends = [at for at, _ in ordered[1:]] + [until] if ordered else []
        for (start, verdicts), end in zip(ordered, ends, strict=True):
            for target, met in verdicts.items():
                _spread(spans, target, objective, (start, end), met)
    return [
        DayOfObjective(day, target, objective, seconds, int(count))
        for (day, target, objective), (seconds, count) in sorted(spans.items())
    ]


def _spread(
    spans: dict[tuple[str, str, str], list[float]],
    target: str,
    objective: str,
    stretch: tuple[dt.datetime, dt.datetime],
    met: bool,
) -> None:
    """Add one verdict's stretch to each UTC day it covers: [seconds not met, evaluations]."""
    moment, end = stretch
    evaluated = 1
    while True:
        day = moment.astimezone(dt.UTC).date()
        midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        stop = min(end, midnight)
        entry = spans.setdefault((day.isoformat(), target, objective), [0.0, 0.0])
        entry[0] += 0.0 if met else max((stop - moment).total_seconds(), 0.0)
        entry[1] += evaluated
        if end <= midnight:
            return
        moment, evaluated = midnight, 0
