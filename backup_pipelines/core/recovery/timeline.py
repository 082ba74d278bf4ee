"""A server's recovery timeline in the runbook: its window and gaps, kept base backups, named
restore points, PITR restore tests and the dump days of its databases, drawn to scale. Choosing
a point, a test or any moment (mouse or keyboard) shows which backup the restore starts from,
about how much WAL it replays, and the commands and run config that restore it there.

Everything is inline (style, data, script): the page works opened from a file with no network.
What is restorable where is decided here, in Python (`recovery_spans`); the script only looks
the chosen moment up in those spans and fills the templates in.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass

from backup_pipelines.core.common.checks import CheckRecord
from backup_pipelines.core.servers.pgbackrest import BackupSet
from backup_pipelines.core.servers.restore_points import RestorePoint, backup_before
from backup_pipelines.core.servers.wal import lsn_number, utc_text
from backup_pipelines.core.servers.window import RecoveryWindow, Span, recovery_spans

TARGET_PLACEHOLDER = "@TARGET@"


@dataclass(frozen=True)
class PitrTestOutcome:
    """A PITR restore test as the timeline shows it."""

    target: dt.datetime
    achieved: str  # the last commit the copy replayed, as the test recorded it
    seconds: float | None  # restore duration: the RTO measured
    passed: bool
    evaluated_at: dt.datetime

    @classmethod
    def from_record(cls, record: CheckRecord) -> PitrTestOutcome | None:
        target = record.metadata.get("target_time")
        if not isinstance(target, str):
            return None  # failed before a target was chosen
        seconds = record.metadata.get("restore_duration_seconds")
        return cls(
            dt.datetime.fromisoformat(target),
            str(record.metadata.get("achieved_recovery_point", "?")),
            float(seconds) if isinstance(seconds, int | float) else None,
            record.passed,
            record.evaluated_at,
        )


@dataclass(frozen=True)
class ServerTimeline:
    window: RecoveryWindow | None
    backups: list[BackupSet]
    points: list[RestorePoint]  # those a restore can still reach
    tests: list[PitrTestOutcome]
    dump_days: dict[str, list[str]]  # the server's databases: days with a verified archive
    end_lsn: int | None  # where the newest archived WAL ends, at the window's end


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _anchors(timeline: ServerTimeline) -> list[tuple[int, int]]:
    """(moment, LSN) pairs known exactly, oldest first: the replay estimate for a moment
    interpolates between them."""
    pairs = [
        *((_ms(b.started), lsn_number(b.start_lsn)) for b in timeline.backups),
        *((_ms(b.stopped), lsn_number(b.stop_lsn)) for b in timeline.backups),
        *((_ms(p.created_at), lsn_number(p.lsn)) for p in timeline.points),
    ]
    if timeline.window is not None and timeline.end_lsn is not None:
        pairs.append((_ms(timeline.window.end), timeline.end_lsn))
    return sorted(set(pairs))


def timeline_data(
    server: str, timeline: ServerTimeline, spans: list[Span], commands: str, run_config: str
) -> dict[str, object]:
    """What the page's script reads: the spans, the backups and points, and the templates."""
    return {
        "server": server,
        "start": _ms(spans[0].start),
        "end": _ms(spans[-1].end),
        "spans": [
            {
                "start": _ms(span.start),
                "end": _ms(span.end),
                "backup": span.backup.label if span.backup else None,
                "reason": span.reason,
            }
            for span in spans
        ],
        "backups": {
            b.label: {
                "kind": b.kind,
                "started": utc_text(b.started),
                "stopped": utc_text(b.stopped),
                "startLsn": lsn_number(b.start_lsn),
                "bytes": b.database_bytes,
            }
            for b in timeline.backups
        },
        "points": {
            p.name: {
                "at": utc_text(p.created_at),
                "lsn": p.lsn,
                "backup": backup.label,
                "replayBytes": lsn_number(p.lsn) - lsn_number(backup.start_lsn),
                "by": p.requested_by,
                "note": p.note,
            }
            for p in timeline.points
            if (backup := backup_before(timeline.backups, p.lsn)) is not None
        },
        "anchors": _anchors(timeline),
        "commands": commands,
        "runConfig": run_config,
    }


def _position(moment: dt.datetime, start: dt.datetime, end: dt.datetime) -> float:
    length = (end - start).total_seconds() or 1.0
    return max(0.0, min(100.0, (moment - start).total_seconds() / length * 100))


def _band(css: str, left: float, right: float, title: str) -> str:
    return (
        f'<div class="{css}" style="left:{left:.3f}%;width:{max(right - left, 0.2):.3f}%" '
        f'title="{html.escape(title)}"></div>'
    )


def _marker(css: str, at: float, label: str, data: str) -> str:
    return (
        f'<button type="button" class="tl-marker {css}" style="left:{at:.3f}%" {data} '
        f'aria-label="{html.escape(label)}" title="{html.escape(label)}"></button>'
    )


def render_timeline(server: str, timeline: ServerTimeline, commands: str, run_config: str) -> str:
    """The timeline section of one server (empty when no moment can be reached yet).
    `commands` and `run_config` hold TARGET_PLACEHOLDER where the chosen target goes."""
    spans = recovery_spans(timeline.window, timeline.backups)
    if not spans:
        return ""
    start, end = spans[0].start, spans[-1].end

    def at(moment: dt.datetime) -> float:
        return _position(moment, start, end)

    lanes = [
        _band(
            "tl-span " + ("tl-ok" if span.backup else "tl-no"),
            at(span.start),
            at(span.end),
            f"{utc_text(span.start)} to {utc_text(span.end)}: "
            + (f"restorable from {span.backup.label}" if span.backup else str(span.reason)),
        )
        for span in spans
    ]
    backups = [
        _marker(
            "tl-backup",
            at(b.stopped),
            f"{b.kind} backup {b.label}: taken {utc_text(b.started)} to {utc_text(b.stopped)}, "
            f"{b.database_bytes:,} bytes",
            f'data-moment="{_ms(b.stopped)}"',
        )
        for b in timeline.backups
        if start <= b.stopped <= end
    ]
    backup_bands = [
        _band("tl-taking", at(b.started), at(b.stopped), f"{b.label} being taken")
        for b in timeline.backups
        if b.started <= end
    ]
    points = [
        _marker(
            "tl-point",
            at(p.created_at),
            f"restore point {p.name} ({utc_text(p.created_at)})",
            f'data-point="{html.escape(p.name)}"',
        )
        for p in timeline.points
        if start <= p.created_at <= end
    ]
    tests = [
        _marker(
            "tl-test " + ("tl-passed" if t.passed else "tl-failed"),
            at(t.target),
            f"PITR restore test {'passed' if t.passed else 'FAILED'}: target {utc_text(t.target)}",
            f'data-moment="{_ms(t.target)}"',
        )
        for t in timeline.tests
        if start <= t.target <= end
    ]
    data = timeline_data(server, timeline, spans, commands, run_config)
    script_data = json.dumps(data).replace("</", "<\\/")
    name = html.escape(server)
    return f"""<section class="timeline" data-server="{name}">
<h3>Recovery timeline: choose the moment to restore to</h3>
<p>From {utc_text(start)} to {utc_text(end)}. Green: restorable; red: not (hover for why);
grey bars: a base backup being taken. Click a restore point (◆), a tested moment (●), a
backup's end (▲) or anywhere on the bar; or Tab to the bar and use ←/→ (Shift: ten times
further), Home/End, and Enter.</p>
<div class="tl-track" tabindex="0" role="slider" aria-label="Moment to restore server {name} to"
 aria-valuemin="{data["start"]}" aria-valuemax="{data["end"]}" aria-valuenow="{data["end"]}"
 data-start="{data["start"]}" data-end="{data["end"]}">
{"".join(lanes)}{"".join(backup_bands)}
</div>
<div class="tl-markers">{"".join(backups)}{"".join(points)}{"".join(tests)}</div>
{_lists(timeline)}
<form class="tl-any"><label>Any moment (UTC):
<input class="tl-moment" type="text" size="26" placeholder="{utc_text(end)}"></label>
<button type="submit">Show</button></form>
<div class="tl-selection" aria-live="polite">
<p class="tl-chosen">Nothing chosen yet.</p>
<pre class="tl-commands" data-server="{name}" hidden></pre>
<pre class="tl-run-config" data-server="{name}" hidden></pre>
</div>
<script type="application/json" class="tl-data">{script_data}</script>
</section>
"""


def _lists(timeline: ServerTimeline) -> str:
    """The same marks as lists, for reading and for a keyboard."""
    points = "".join(
        f'<li><button type="button" data-point="{html.escape(p.name)}">{html.escape(p.name)}'
        f"</button> made {utc_text(p.created_at)} (requested: {html.escape(p.requested_by)})"
        + (f": {html.escape(p.note)}" if p.note else "")
        + "</li>"
        for p in timeline.points
    )
    tests = "".join(
        f'<li><button type="button" data-moment="{_ms(t.target)}">{utc_text(t.target)}'
        f"</button> {'passed' if t.passed else '<span class=bad>FAILED</span>'} on "
        f"{t.evaluated_at:%Y-%m-%d %H:%M} UTC, reached {html.escape(t.achieved)}"
        + (f", restored in {t.seconds:.1f} s (RTO)" if t.seconds is not None else "")
        + "</li>"
        for t in timeline.tests
    )
    dumps = "".join(
        f'<li><a href="#{html.escape(database)}">{html.escape(database)}'
        f"</a>: {html.escape(', '.join(days[-7:]) or 'none verified')}</li>"
        for database, days in timeline.dump_days.items()
    )
    return (
        "<details open><summary>Restore points, PITR tests and dump days</summary>"
        f'<p>Restore points:</p><ul class="tl-points">{points or "<li>none</li>"}</ul>'
        f'<p>PITR restore tests:</p><ul class="tl-tests">{tests or "<li>none</li>"}</ul>'
        "<p>Logical dumps of this server's databases (verified days, newest seven; restore them "
        f'from their own sections):</p><ul class="tl-dumps">{dumps or "<li>none</li>"}</ul>'
        "</details>"
    )


TIMELINE_STYLE = """
.timeline { margin: 1rem 0 1.5rem; }
.tl-track { position: relative; height: 2.2rem; background: #eee; border-radius: 3px;
            cursor: crosshair; }
.tl-track:focus { outline: 3px solid #2a5bd7; }
.tl-span, .tl-taking, .tl-cursor { position: absolute; top: 0; bottom: 0; }
.tl-ok { background: #8fd19e; } .tl-no { background: #f1a7a0; }
.tl-taking { top: 60%; background: #777; opacity: .7; }
.tl-cursor { width: 2px; background: #1d232b; pointer-events: none; }
.tl-markers { position: relative; height: 1.6rem; }
.tl-marker { position: absolute; transform: translateX(-50%); border: 1px solid #1d232b;
             width: 1rem; height: 1rem; padding: 0; cursor: pointer; }
.tl-marker:focus { outline: 3px solid #2a5bd7; }
.tl-point { background: #2a5bd7; transform: translateX(-50%) rotate(45deg); }
.tl-test { border-radius: 50%; } .tl-passed { background: #11713a; }
.tl-failed { background: #b3261e; }
.tl-backup { background: #444; clip-path: polygon(50% 0, 100% 100%, 0 100%); }
.tl-selection pre { white-space: pre-wrap; }
"""

# The one script of the page: the spans decide; this looks the moment up and fills the
# templates in. Quoting: shell single quotes, and JSON strings (valid YAML) for the run config.
TIMELINE_SCRIPT = r"""
(function () {
  function shellQuote(text) { return "'" + text.replace(/'/g, "'\\''") + "'"; }
  function utc(ms) {
    return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + "+00";
  }
  function size(bytes) {
    var units = ["bytes", "KiB", "MiB", "GiB", "TiB"], n = bytes, i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function lsnAt(anchors, ms) {
    if (!anchors.length) { return null; }
    if (ms <= anchors[0][0]) { return anchors[0][1]; }
    for (var i = 1; i < anchors.length; i++) {
      var a = anchors[i - 1], b = anchors[i];
      if (ms <= b[0]) { return a[1] + (b[1] - a[1]) * (ms - a[0]) / ((b[0] - a[0]) || 1); }
    }
    return anchors[anchors.length - 1][1];
  }
  function parseMoment(text) {
    var t = text.trim().replace(" ", "T");
    if (/[+-]\d\d$/.test(t)) { t += ":00"; }
    if (!/(Z|[+-]\d\d:\d\d)$/.test(t)) { t += "Z"; }
    var ms = Date.parse(t);
    return isNaN(ms) ? null : ms;
  }
  function setUp(section) {
    var data = JSON.parse(section.querySelector(".tl-data").textContent);
    var track = section.querySelector(".tl-track");
    var chosen = section.querySelector(".tl-chosen");
    var commands = section.querySelector(".tl-commands");
    var runConfig = section.querySelector(".tl-run-config");
    var cursor = document.createElement("div");
    cursor.className = "tl-cursor";
    track.appendChild(cursor);
    var current = data.end;

    function show(title, backupLabel, replay, shellTarget, configTarget) {
      var backup = data.backups[backupLabel];
      chosen.textContent = title + ". Restores from " + backup.kind + " backup " + backupLabel +
        " (taken " + backup.started + " to " + backup.stopped + ", " + size(backup.bytes) +
        ") and replays " + replay + " of WAL on top of it.";
      commands.textContent = data.commands.replace("@TARGET@", "--set=" + backupLabel + " " +
        shellTarget);
      runConfig.textContent = data.runConfig.replace("@TARGET@", configTarget);
      commands.hidden = runConfig.hidden = false;
    }
    function refuse(title, reason) {
      chosen.textContent = title + " cannot be restored to: " + reason + ".";
      commands.textContent = runConfig.textContent = "";
      commands.hidden = runConfig.hidden = true;
    }
    function chooseMoment(ms) {
      // Whole seconds, still inside the timeline.
      ms = Math.floor(Math.min(Math.max(ms, data.start), data.end) / 1000) * 1000;
      if (ms < data.start) { ms += 1000; }
      moveCursor(ms);
      var text = utc(ms), title = "Moment " + text;
      // At a border, as restore_server decides: reachable wins, and the newer backup.
      var spans = data.spans.filter(function (s) { return s.start <= ms && ms <= s.end; });
      var usable = spans.filter(function (s) { return s.backup; });
      var span = usable.length ? usable[usable.length - 1] : spans[0];
      if (!span || !span.backup) {
        refuse(title, span ? span.reason : "it lies outside the timeline");
        return;
      }
      var lsn = lsnAt(data.anchors, ms);
      var replay = lsn === null ? "an unknown amount" :
        "about " + size(Math.max(0, Math.round(lsn - data.backups[span.backup].startLsn)));
      show(title, span.backup, replay, "--type=time --target=" + shellQuote(text),
        "target_time: " + JSON.stringify(text));
    }
    function choosePoint(name) {
      var point = data.points[name];
      moveCursor(Date.parse(point.at.replace(" ", "T")));
      show("Restore point " + name + " (made " + point.at + " at LSN " + point.lsn +
        (point.note ? ": " + point.note : "") + "; requested: " + point.by + ")", point.backup,
        size(point.replayBytes), "--type=name --target=" + shellQuote(name),
        "restore_point: " + JSON.stringify(name));
    }
    function moveCursor(ms) {
      current = ms;
      cursor.style.left = ((ms - data.start) / ((data.end - data.start) || 1) * 100) + "%";
      track.setAttribute("aria-valuenow", String(ms));
      track.setAttribute("aria-valuetext", utc(ms));
    }
    track.addEventListener("click", function (event) {
      var box = track.getBoundingClientRect();
      chooseMoment(data.start + (event.clientX - box.left) / box.width * (data.end - data.start));
    });
    track.addEventListener("keydown", function (event) {
      var step = Math.max(1000, (data.end - data.start) / 200) * (event.shiftKey ? 10 : 1);
      var moves = { ArrowLeft: current - step, ArrowRight: current + step, Home: data.start,
        End: data.end };
      if (event.key in moves) {
        moveCursor(Math.min(Math.max(moves[event.key], data.start), data.end));
        track.setAttribute("aria-valuetext", utc(current));
        event.preventDefault();
      } else if (event.key === "Enter" || event.key === " ") {
        chooseMoment(current);
        event.preventDefault();
      }
    });
    section.querySelectorAll("[data-point]").forEach(function (button) {
      button.addEventListener("click", function () { choosePoint(button.dataset.point); });
    });
    section.querySelectorAll("[data-moment]").forEach(function (button) {
      button.addEventListener("click", function () {
        chooseMoment(Number(button.dataset.moment));
      });
    });
    section.querySelector(".tl-any").addEventListener("submit", function (event) {
      event.preventDefault();
      var text = section.querySelector(".tl-moment").value, ms = parseMoment(text);
      if (ms === null) { refuse("'" + text + "'", "it is not a time such as " + utc(data.end)); }
      else if (ms < data.start || ms > data.end) {
        refuse("Moment " + utc(ms), "it lies outside the timeline (" + utc(data.start) + " to " +
          utc(data.end) + ")");
      } else { chooseMoment(ms); }
    });
    moveCursor(data.end);
  }
  document.querySelectorAll("section.timeline").forEach(setUp);
})();
"""
