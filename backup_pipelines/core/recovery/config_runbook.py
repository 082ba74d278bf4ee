"""The runbook's configuration part: per source its newest stored version, the files in it,
and the commands that restore it with only the store's CLI, sha256sum, zstd, tar (and age
where encrypted)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from backup_pipelines import names
from backup_pipelines.core.configs.snapshots import (
    ConfigManifest,
    config_days,
    read_config_manifest,
)
from backup_pipelines.storage import ObjectStore

RESTORED_FOLDER = "restored-config"


@dataclass(frozen=True)
class ConfigRunbookEntry:
    name: str
    versions: int
    manifest: ConfigManifest | None  # the newest version
    archive_uri: str | None
    download_command: str | None


def config_runbook_entry(store: ObjectStore, name: str) -> ConfigRunbookEntry:
    days = config_days(store, name)
    manifest = read_config_manifest(store, name, days[-1]) if days else None
    if manifest is None:
        return ConfigRunbookEntry(name, len(days), None, None, None)
    return ConfigRunbookEntry(
        name=name,
        versions=len(days),
        manifest=manifest,
        archive_uri=store.uri(manifest.object_key),
        download_command=store.download_command(manifest.object_key, stored_file_name(manifest)),
    )


def stored_file_name(manifest: ConfigManifest) -> str:
    return f"{manifest.name}_{manifest.partition}.tar.zst" + (".age" if manifest.encryption else "")


def config_restore_commands(entry: ConfigRunbookEntry) -> str:
    """Shell commands that write the version's files under ./restored-config/<name>/, each at
    its original path below it, with its mode (and owner, run as root). An encrypted version
    is decrypted with the age identity in the file $AGE_IDENTITY_FILE."""
    manifest = entry.manifest
    assert manifest is not None and entry.download_command is not None
    stored = stored_file_name(manifest)
    compressed = stored.removesuffix(".age")
    folder = f"{RESTORED_FOLDER}/{manifest.name}"
    decrypt = (
        [f'age --decrypt --identity "$AGE_IDENTITY_FILE" -o {compressed} {stored}']
        if manifest.encryption
        else []
    )
    return "\n".join(
        [
            "set -euo pipefail",
            entry.download_command,
            f'echo "{manifest.sha256}  {stored}" | sha256sum --check -',
            *decrypt,
            f"mkdir -p {folder}",
            f"zstd -d -c {compressed} | tar -xpf - -C {folder}",
            f"rm -f {' '.join(dict.fromkeys([stored, compressed]))}",
        ]
    )


def config_section(entries: list[ConfigRunbookEntry]) -> str:
    if not entries:
        return ""
    return '<h2 id="configuration">Configuration</h2>\n' + "\n".join(map(_source, entries))


def _source(entry: ConfigRunbookEntry) -> str:
    name = html.escape(entry.name)
    if entry.manifest is None:
        # A warning, not a failure: no configuration is part of a recovery objective, and
        # the alerts sensor raises config_stale once a snapshot is overdue.
        return f'<h3>{name}</h3>\n<p class="warn">No version stored yet.</p>'
    manifest = entry.manifest
    files = "\n".join(
        f"<tr><td><code>/{html.escape(f['path'])}</code></td><td>{f['size']:,}</td>"
        f"<td><code>{html.escape(f['mode'] or '-')}</code></td>"
        f"<td>{html.escape(f['owner'] or '-')}:{html.escape(f['group'] or '-')}</td></tr>"
        for f in manifest.files
    )
    return f"""<h3>{name}</h3>
<p>Newest version: {html.escape(manifest.partition)}, taken {html.escape(manifest.taken_at)}
({entry.versions} days stored); archive <code>{html.escape(entry.archive_uri or "")}</code>,
SHA-256 <code>{manifest.sha256}</code>{", encrypted with age" if manifest.encryption else ""}.</p>
<table><tr><th>File</th><th>Bytes</th><th>Mode</th><th>Owner</th></tr>
{files}
</table>
<p>Restore by hand: the files land under <code>{RESTORED_FOLDER}/{name}/</code> at their
original paths; compare them with the live ones before copying them over. Or launch job
<code>{names.RESTORE_CONFIG_JOB}</code> with <code>name: {name}</code> and a
<code>target_dir</code>.</p>
<pre class="config-restore" data-config="{name}">{
        html.escape(config_restore_commands(entry))
    }</pre>"""
