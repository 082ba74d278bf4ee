"""The recovery runbook: one self-contained HTML page, stored next to the archives.

It is written for the day this service is down: per database the newest verified archive,
its checksum and restore-test result, and commands that restore it with only the AWS CLI (or
cp), sha256sum, the decompressor and the PostgreSQL client programs; where a replica store is
configured, the same for the newest proved copy there (the day the primary store is gone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backup_pipelines import names
from backup_pipelines.core.common.checks import CheckRecord
from backup_pipelines.core.common.streams import file_suffix
from backup_pipelines.core.postgres.manifest import Manifest, list_backup_days, read_manifest
from backup_pipelines.core.recovery.config_runbook import ConfigRunbookEntry, config_section
from backup_pipelines.core.recovery.objectives import Standing, objectives_table_html
from backup_pipelines.core.recovery.timeline import (
    TARGET_PLACEHOLDER,
    TIMELINE_SCRIPT,
    TIMELINE_STYLE,
    ServerTimeline,
    render_timeline,
)
from backup_pipelines.core.servers.pgbackrest import Repository, option_variable
from backup_pipelines.core.servers.window import RecoveryWindow
from backup_pipelines.storage import ObjectStore

# (database, day, check name) -> the newest finished evaluation of that check, if any
CheckLookup = Callable[[str, str, str, str], CheckRecord | None]  # database, day, step, check


@dataclass(frozen=True)
class RunbookEntry:
    database: str
    archives: int
    manifest: Manifest | None  # the newest archive whose verification passed
    archive_uri: str | None
    download_command: str | None
    restore_test: CheckRecord | None
    from_replica: bool = False  # an entry of the replica store (its check, its drill)
    replica: RunbookEntry | None = None  # the same database's entry in the replica store


# The step that proves a stored copy, and the one that restore-tests it: in the archive store,
# and in the replica store.
_PROOF = {
    False: (names.VERIFICATION, names.RESTORE_TEST),
    True: (names.REPLICA, names.REPLICA_RESTORE_TEST),
}


def runbook_entry(
    store: ObjectStore, database: str, lookup: CheckLookup, *, from_replica: bool = False
) -> RunbookEntry:
    """The newest proved copy of `database` in `store` (the archive store, or the replica)."""
    step, test_step = _PROOF[from_replica]
    days = list_backup_days(store, database)
    for day in reversed(days):
        checks = [lookup(database, day, step, check) for check in names.PROVING_CHECKS[step]]
        if not all(check is not None and check.passed for check in checks):
            continue
        manifest = read_manifest(store, database, day)
        if manifest is None or store.size(manifest.object_key) != manifest.size_bytes:
            continue
        return RunbookEntry(
            database=database,
            archives=len(days),
            manifest=manifest,
            archive_uri=store.uri(manifest.object_key),
            download_command=store.download_command(
                manifest.object_key, archive_file_name(manifest)
            ),
            restore_test=lookup(database, day, test_step, names.RESTORED_DATA_MATCHES),
            from_replica=from_replica,
        )
    return RunbookEntry(database, len(days), None, None, None, None, from_replica)


@dataclass(frozen=True)
class ServerRunbookEntry:
    """A server recoverable to a moment: its repository, its timeline and newest test."""

    server: str
    stanza: str
    repository: Repository
    pg_ctl: str
    timeline: ServerTimeline
    pitr_test: CheckRecord | None
    problem: str | None = None  # the repository could not be read when the page was written
    # pgbackrest.repo2 alone (as pgBackRest's repo1): for the day repository 1 is gone.
    second_repository: Repository | None = None


_TIME_TARGET = '--type=time "--target=$TARGET_TIME"'


def pitr_restore_commands(entry: ServerRunbookEntry, target: str = _TIME_TARGET) -> str:
    """Shell commands (as root) that restore the server with pgBackRest alone to `target`
    (pgBackRest's options; by default $TARGET_TIME) into $RESTORE_DIR and start it on
    $RESTORE_PORT. Secrets come from the environment."""
    settings = {"config": "/dev/null", "stanza": entry.stanza, **entry.repository.options}
    controldata = shlex.quote(str(Path(entry.pg_ctl).parent / "pg_controldata"))
    exports = [
        f"export {option_variable(name)}={shlex.quote(value)}" for name, value in settings.items()
    ]
    exports += [
        f'export {option_variable(name)}="${{{_secret_variable(name)}}}"'
        for name in entry.repository.secrets
    ]
    return "\n".join(
        [
            "set -euo pipefail",
            *exports,
            'mkdir -m 700 "$RESTORE_DIR" && chown postgres:postgres "$RESTORE_DIR"',
            'runuser -u postgres -- pgbackrest restore --pg1-path="$RESTORE_DIR" '
            f"{target} --target-action=promote",
            # hot_standby=off: no reader sees the data before recovery reaches the target.
            f'runuser -u postgres -- {entry.pg_ctl} -D "$RESTORE_DIR" '
            '-l "$RESTORE_DIR/restore.log" '
            '-o "-p $RESTORE_PORT -c archive_mode=off -c hot_standby=off" -w -t 3600 start',
            # pg_ctl returns before the replay ends; the copy is whole once promoted.
            f'until runuser -u postgres -- env LC_ALL=C {controldata} "$RESTORE_DIR" '
            "| grep -q 'in production'",
            f'do runuser -u postgres -- {entry.pg_ctl} -D "$RESTORE_DIR" status >/dev/null || '
            '{ echo "recovery stopped: see $RESTORE_DIR/restore.log" >&2; exit 1; }; sleep 1; done',
        ]
    )


_SECRET_VARIABLES = {
    "repo1-cipher-pass": "PITR_CIPHER_PASS",
    "repo1-s3-key": "AWS_ACCESS_KEY_ID",
    "repo1-s3-key-secret": "AWS_SECRET_ACCESS_KEY",
}


def _secret_variable(option: str) -> str:
    return _SECRET_VARIABLES.get(option, option_variable(option))


def restore_server_config(server: str, target: str) -> str:
    """The restore_server job's run config for `target` (a `target_time:` or `restore_point:`
    line), into a new folder, started on a free port."""
    return "\n".join(
        [
            "ops:",
            "  restore_server_to_target:",
            "    config:",
            f"      server: {server}",
            f"      {target}",
            "      data_directory: /var/lib/postgresql/restored",
            "      port: 5433",
        ]
    )


def archive_file_name(manifest: Manifest) -> str:
    encrypted = ".age" if manifest.encryption else ""
    suffix = file_suffix(manifest.compression) + encrypted
    return f"{manifest.database}_{manifest.partition}.dump{suffix}"


def hand_restore_commands(entry: RunbookEntry) -> str:
    """Shell commands that restore the entry's archive into a new database named in $TARGET_DB.

    An encrypted archive is decrypted with the age identity in the file $AGE_IDENTITY_FILE.
    """
    manifest = entry.manifest
    assert manifest is not None and entry.download_command is not None
    stored, dump = archive_file_name(manifest), f"{manifest.database}_{manifest.partition}.dump"
    compressed = stored.removesuffix(".age")
    decrypt = (
        [f'age --decrypt --identity "$AGE_IDENTITY_FILE" -o {compressed} {stored}']
        if manifest.encryption
        else []
    )
    decompress = {
        "zstd": f"zstd -d -f {compressed} -o {dump}",
        "gzip": f"gzip -dc {compressed} > {dump}",
        "none": f"mv {compressed} {dump}",
    }[manifest.compression]
    return "\n".join(
        [
            "set -euo pipefail",
            entry.download_command,
            f'echo "{manifest.sha256}  {stored}" | sha256sum --check -',
            *decrypt,
            decompress,
            'createdb "$TARGET_DB"',
            f'pg_restore --jobs=4 --no-owner --exit-on-error --dbname="$TARGET_DB" {dump}',
            f"rm -f {' '.join(dict.fromkeys([stored, compressed, dump]))}",
        ]
    )


def restore_job_config(entry: RunbookEntry) -> str:
    assert entry.manifest is not None
    return "\n".join(
        [
            "ops:",
            "  restore_from_archive:",
            "    config:",
            f"      database: {entry.database}",
            f'      partition: "{entry.manifest.partition}"',
            "      target_url: postgresql://USER:${TARGET_PASSWORD}@HOST:5432/postgres",
            f"      target_database: {entry.database}_restored",
            *(["      from_replica: true"] if entry.from_replica else []),
        ]
    )


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d232b; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { text-align: left; padding: .25rem .8rem .25rem 0; vertical-align: top; }
th { font-weight: 600; color: #445; }
code, pre { font-family: ui-monospace, monospace; font-size: .9rem; }
pre { background: #f3f4f7; padding: .8rem; overflow-x: auto; border-radius: 4px; }
.ok { color: #11713a; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
.warn { color: #8a5a00; font-weight: 600; }
"""


def render_runbook(
    entries: list[RunbookEntry],
    *,
    generated_at: dt.datetime,
    servers: tuple[ServerRunbookEntry, ...] = (),
    objectives: list[Standing] | None = None,
    configs: tuple[ConfigRunbookEntry, ...] = (),
) -> str:
    """The page; with `objectives`, it opens with the table of promised and achieved RPO and
    RTO; the configuration sources' versions come last."""
    covered = objectives_table_html(objectives) if objectives else ""
    sections = "\n".join(
        [
            *(_database_section(entry) for entry in entries),
            *(_server_section(s) for s in servers),
            config_section(list(configs)),
        ]
    )
    missing = [entry.database for entry in entries if entry.manifest is None]
    banner = (
        f'<p class="bad">No verified archive for: {html.escape(", ".join(missing))}.</p>'
        if missing
        else '<p class="ok">Every database has a verified archive.</p>'
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Recovery runbook — backup_pipelines</title>
<style>{_STYLE}{TIMELINE_STYLE if servers else ""}</style></head>
<body>
<h1>Recovery runbook</h1>
<p>Generated {generated_at:%Y-%m-%d %H:%M:%S} UTC by backup_pipelines.
This page needs nothing but itself: keep a copy where you can reach it when everything
else is down.</p>
{covered}
{banner}
<h2>Before you start</h2>
<ul>
<li>You need: the tool that reads the archive's store (the AWS CLI for S3, the Azure CLI for
Azure Blob Storage, the Google Cloud CLI for GCS) or access to the backup folder,
<code>sha256sum</code>, the decompressor named below (<code>zstd</code>), and the PostgreSQL
client programs (<code>createdb</code>, <code>pg_restore</code>) of the version shown or newer.</li>
<li>Point the PostgreSQL programs at the target server through the environment:
<code>export PGHOST=… PGPORT=5432 PGUSER=… PGPASSWORD=… TARGET_DB=…</code>
(<code>TARGET_DB</code> is the new database to restore into; it must not exist yet).</li>
<li>Set credentials that may read the archive: for S3 <code>AWS_PROFILE</code> or
<code>AWS_ACCESS_KEY_ID</code>/<code>AWS_SECRET_ACCESS_KEY</code>; for Azure
<code>AZURE_STORAGE_KEY</code> (the account key) or <code>AZURE_STORAGE_SAS_TOKEN</code>, or
<code>az login</code> with <code>AZURE_STORAGE_AUTH_MODE=login</code>; for GCS
<code>gcloud auth login</code> or a service account.</li>
<li>The checksum line stops the commands if the download is not exactly what was verified.</li>
<li>Encrypted archives (marked below) also need <code>age</code> and the private key (age
identity) they were encrypted to, in a file: <code>export AGE_IDENTITY_FILE=…</code>. Keep
that key somewhere other than the backups.</li>
</ul>
{sections}
{f"<script>{TIMELINE_SCRIPT}</script>" if servers else ""}
</body></html>
"""


def _database_section(entry: RunbookEntry) -> str:
    name = html.escape(entry.database)
    replica = _replica_section(entry.replica) if entry.replica else ""
    if entry.manifest is None:
        return (
            f'<h2 id="{name}">{name}</h2>\n<p class="bad">No verified archive '
            f"({entry.archives} archives stored, none has passed verification).</p>{replica}"
        )
    return f'<h2 id="{name}">{name}</h2>\n{_copy_section(entry)}{replica}'


def _replica_section(entry: RunbookEntry) -> str:
    if entry.manifest is None:
        return (
            '<h3>The second copy (replica store)</h3>\n<p class="bad">No proved copy in the '
            f"replica store ({entry.archives} stored, none has passed {names.REPLICA_VERIFIED})."
            "</p>"
        )
    return (
        "<h3>The second copy (replica store)</h3>\n<p>For the day the primary store is gone: "
        "these commands and this run config read only the replica store.</p>\n"
        + _copy_section(entry)
    )


def _copy_section(entry: RunbookEntry) -> str:
    """One proved copy: its facts, the hand commands and the restore job's run config."""
    assert entry.manifest is not None
    name, manifest = html.escape(entry.database), entry.manifest
    where = "replica" if entry.from_replica else "archive"
    test_label = "Failover drill" if entry.from_replica else "Restore test"
    rows = [
        ("Day", manifest.partition),
        ("Snapshot taken", manifest.snapshot_taken_at),
        ("Archive", entry.archive_uri or ""),
        ("Size", f"{manifest.size_bytes:,} bytes ({manifest.compression})"),
        ("Encrypted", f"age, to {manifest.encryption_recipient}" if manifest.encryption else "no"),
        ("SHA-256", manifest.sha256),
        ("Source server", f"PostgreSQL {manifest.server_version}"),
        ("Needs pg_restore", f"{manifest.pg_dump_version} or newer"),
        ("Contents", f"{len(manifest.relations)} tables, {manifest.total_rows:,} rows"),
        ("Archives stored", str(entry.archives)),
    ]
    table = "\n".join(
        f"<tr><th>{html.escape(label)}</th><td><code>{html.escape(value)}</code></td></tr>"
        for label, value in rows
    )
    return f"""<table>
{table}
<tr><th>{test_label}</th><td>{_restore_test_cell(entry.restore_test)}</td></tr>
</table>
<h3>Restore by hand</h3>
<pre class="hand-restore" data-database="{name}" data-store="{where}">{
        html.escape(hand_restore_commands(entry))
    }</pre>
<h3>Or with the restore job</h3>
<p>Launch job <code>{names.RESTORE_DATABASE_JOB}</code> from the UI's launchpad with this
run config (the password is read from the environment variable, never written into the
config), or run <code>dg launch --job {names.RESTORE_DATABASE_JOB} -m backup_pipelines.definitions
-c restore.yaml</code>.</p>
<pre class="restore-job" data-database="{name}" data-store="{where}">{
        html.escape(restore_job_config(entry))
    }</pre>
"""


def _restore_test_cell(record: CheckRecord | None) -> str:
    if record is None:
        return '<span class="warn">never restore-tested</span>'
    when = f"{record.evaluated_at:%Y-%m-%d %H:%M} UTC"
    if not record.passed:
        return f'<span class="bad">FAILED</span> on {when}: {html.escape(record.description)}'
    seconds = record.metadata.get("restore_duration_seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    rows = record.metadata.get("rows_compared")
    compared = f", {rows:,} rows compared" if isinstance(rows, int) else ""
    return f'<span class="ok">passed</span> on {when}{took}{compared}'


def _server_section(entry: ServerRunbookEntry) -> str:
    name = html.escape(entry.server)
    anchor = f"server-{name}"
    window, backups = entry.timeline.window, entry.timeline.backups
    if entry.problem or not backups:
        why = entry.problem or "no base backup in the repository yet"
        return (
            f'<h2 id="{anchor}">Server {name}: point-in-time recovery</h2>\n'
            f'<p class="bad">Not recoverable to a moment: {html.escape(why)}.</p>'
        )
    reachable = f"any moment {window.between()}" if window else "unknown"
    gaps = "".join(
        f'<p class="bad wal-gap">The WAL archive has a gap: {html.escape(gap.describe())}.</p>\n'
        for gap in (window.gaps if window else ())
    )
    rows = "\n".join(
        f"<tr><td><code>{html.escape(b.label)}</code></td><td>{b.kind}</td>"
        f"<td>{b.started:%Y-%m-%d %H:%M:%S} UTC</td>"
        f"<td>{b.stopped:%Y-%m-%d %H:%M:%S} UTC</td><td>{b.database_bytes:,} bytes</td></tr>"
        for b in reversed(backups)
    )
    timeline = render_timeline(
        entry.server,
        entry.timeline,
        pitr_restore_commands(entry, TARGET_PLACEHOLDER),
        restore_server_config(entry.server, TARGET_PLACEHOLDER),
    )
    secrets = ", ".join(f"<code>{_secret_variable(n)}</code>" for n in entry.repository.secrets)
    return f"""<h2 id="{anchor}">Server {name}: point-in-time recovery</h2>
<table>
<tr><th>Recovery window</th><td class="recovery-window">{html.escape(reachable)}</td></tr>
<tr><th>Repository</th><td><code>{html.escape(entry.repository.describe())}</code>
(pgBackRest stanza <code>{html.escape(entry.stanza)}</code>)</td></tr>
<tr><th>PITR restore test</th><td>{_pitr_test_cell(entry.pitr_test)}</td></tr>
</table>
{gaps}{timeline}<table><tr><th>Base backup</th><th>Kind</th><th>Started</th><th>Consistent from</th>
<th>Size</th></tr>
{rows}</table>
<h3>Restore to a moment with pgBackRest alone</h3>
<p>As root on a machine with pgBackRest and PostgreSQL of the same major version, set the moment
(inside the window), a new data folder and a free port{
        ", and the secrets " + secrets + " from where you keep them" if secrets else ""
    }:
<code>export TARGET_TIME='{_example_target(window)}' RESTORE_DIR=/var/lib/postgresql/restored
RESTORE_PORT=5433</code>. For the newest moment instead, drop <code>--type=time</code> and
<code>--target=…</code>. The server starts, replays WAL to the moment and is promoted; it does not
archive (<code>archive_mode=off</code>) until you turn that on.</p>
<pre class="pitr-restore" data-server="{name}">{html.escape(pitr_restore_commands(entry))}</pre>
<p>Or launch job <code>{names.RESTORE_SERVER_JOB}</code> with <code>server: {name}</code>,
<code>target_time</code>, <code>data_directory</code> and <code>port</code>.</p>
{_second_repository_section(entry)}"""


def _second_repository_section(entry: ServerRunbookEntry) -> str:
    """The same restore from the second repository alone (its settings and secrets only)."""
    if entry.second_repository is None:
        return ""
    alone = dataclasses.replace(entry, repository=entry.second_repository)
    secrets = ", ".join(f"<code>{_secret_variable(n)}</code>" for n in alone.repository.secrets)
    return f"""<h3>From the second repository alone</h3>
<p>The day repository 1 is gone: repository 2
(<code>{html.escape(alone.repository.describe())}</code>) holds the same WAL and its own base
backups. These commands name it alone{", with its secrets " + secrets if secrets else ""}; or
launch <code>{names.RESTORE_SERVER_JOB}</code> with <code>repository: 2</code>.</p>
<pre class="pitr-restore" data-server="{html.escape(entry.server)}" data-store="replica">{
        html.escape(pitr_restore_commands(alone))
    }</pre>
"""


def _example_target(window: RecoveryWindow | None) -> str:
    """A moment inside the newest reachable stretch, for the example command."""
    if window is None:
        return "2026-12-01 01:58:00+00"
    newest = window.stretches[-1]
    middle = newest.start + (newest.end - newest.start) / 2
    return f"{middle.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}+00"


def _pitr_test_cell(record: CheckRecord | None) -> str:
    if record is None:
        return '<span class="warn">never tested</span>'
    when = f"{record.evaluated_at:%Y-%m-%d %H:%M} UTC"
    if not record.passed:
        return f'<span class="bad">FAILED</span> on {when}: {html.escape(record.description)}'
    seconds = record.metadata.get("restore_duration_seconds")
    took = f" in {seconds:.1f} s (RTO)" if isinstance(seconds, int | float) else ""
    return f'<span class="ok">passed</span> on {when}{took}: {html.escape(record.description)}'
