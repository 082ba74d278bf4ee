"""Where every object this project stores lives: one helper per path, used by whatever writes,
reads, lists, prunes or accounts for it.

Dumps and archive copies, in both the dump and the archive store:
    <database>/<YYYY-MM-DD>/<database>_<YYYYMMDDTHHMMSSZ>.dump[.zst|.gz][.age]
    <database>/<YYYY-MM-DD>/manifest.json    written last: no manifest, no backup
References between the steps, in the refs store:
    postgres/<database>/<step>/<YYYY-MM-DD>.json    (step `pruning`: a deletion has begun)
Bucket snapshots, in the snapshot store:
    <name>/<YYYY-MM-DD>/listing.json    the source listing taken at snapshot time
    <name>/<YYYY-MM-DD>/objects/<key>   objects new or changed since the previous snapshot
    <name>/<YYYY-MM-DD>/manifest.json   written last
Configuration snapshots, in the archive store (`config-` cannot begin a database's name):
    config-snapshots/<name>/<YYYY-MM-DD>/<name>_<YYYYMMDDTHHMMSSZ>_<files' digest>.tar.zst[.age]
    config-snapshots/<name>/<YYYY-MM-DD>/manifest.json    written last; the manifest of a day
        on which nothing changed names the earlier day's archive instead of storing it again
Data exports, in the dump store (a ZIP with its manifest inside):
    exports/<database>/<export id>.zip
A server's globals, in the dump store:
    servers/<server>/globals/<YYYY-MM-DD>.sql
Reports, in the archive store: recovery_runbook.html, audit/audit_report.{csv,html},
audit/restore_points.csv, audit/objectives.csv, audit/exports.csv.
"""

from __future__ import annotations

import datetime as dt

from backup_pipelines import names
from backup_pipelines.core.common.streams import Compression, file_suffix

MANIFEST_NAME = "manifest.json"
SNAPSHOT_LISTING_NAME = "listing.json"
RUNBOOK_KEY = "recovery_runbook.html"
AUDIT_CSV_KEY = "audit/audit_report.csv"
AUDIT_HTML_KEY = "audit/audit_report.html"
AUDIT_RESTORE_POINTS_KEY = "audit/restore_points.csv"
AUDIT_OBJECTIVES_KEY = "audit/objectives.csv"
AUDIT_EXPORTS_KEY = "audit/exports.csv"
PRUNING_STEP = "pruning"
_SNAPSHOT_OBJECTS = "objects"
CONFIG_SNAPSHOTS = "config-snapshots"
_SERVERS = "servers"


# --- dumps and archive copies -----------------------------------------------------------------
def database_prefix(database: str) -> str:
    return f"{database}/"


def day_prefix(database: str, day: str) -> str:
    return f"{database_prefix(database)}{day}/"


def manifest_key(database: str, day: str) -> str:
    return f"{day_prefix(database, day)}{MANIFEST_NAME}"


def dump_object_key(
    database: str, day: str, taken_at: dt.datetime, compression: Compression, *, encrypted: bool
) -> str:
    stamp = taken_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = file_suffix(compression) + (".age" if encrypted else "")
    return f"{day_prefix(database, day)}{database}_{stamp}.dump{suffix}"


def day_of_backup_key(key: str) -> str:
    """The day folder of a key under `database_prefix` ('' when it has none)."""
    parts = key.split("/")
    return parts[1] if len(parts) > 1 else ""


def is_day_manifest(key: str) -> bool:
    """A day's manifest (`<name>/<day>/manifest.json`), the commit marker of a backup or a
    snapshot; not a file of that name deeper down."""
    return key.endswith(f"/{MANIFEST_NAME}") and key.count("/") == 2


# --- references between the steps -------------------------------------------------------------
def refs_prefix(database: str) -> str:
    return f"{names.DATABASE_PREFIX}/{database}/"


def ref_key(database: str, step: str, day: str) -> str:
    return f"{refs_prefix(database)}{step}/{day}.json"


def step_of_ref_key(key: str) -> str:
    parts = key.split("/")
    return parts[2] if len(parts) > 3 else ""


def day_of_ref_key(key: str) -> str:
    parts = key.split("/")
    return parts[3].removesuffix(".json") if len(parts) > 3 else ""


# --- bucket snapshots -------------------------------------------------------------------------
def snapshot_prefix(name: str) -> str:
    return f"{name}/"


def snapshot_manifest_key(name: str, day: str) -> str:
    return f"{name}/{day}/{MANIFEST_NAME}"


def snapshot_listing_key(name: str, day: str) -> str:
    return f"{name}/{day}/{SNAPSHOT_LISTING_NAME}"


def snapshot_objects_prefix(name: str, day: str) -> str:
    return f"{name}/{day}/{_SNAPSHOT_OBJECTS}/"


def snapshot_object_key(name: str, day: str, key: str) -> str:
    return f"{snapshot_objects_prefix(name, day)}{key}"


# --- configuration snapshots -----------------------------------------------------------------
def config_prefix(name: str) -> str:
    return f"{CONFIG_SNAPSHOTS}/{name}/"


def config_day_prefix(name: str, day: str) -> str:
    return f"{config_prefix(name)}{day}/"


def config_manifest_key(name: str, day: str) -> str:
    return f"{config_day_prefix(name, day)}{MANIFEST_NAME}"


def config_object_key(
    name: str, day: str, taken_at: dt.datetime, tree_sha256: str, *, encrypted: bool
) -> str:
    """Named by time and content: two versions taken in one second never share a key."""
    stamp = taken_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = ".tar.zst" + (".age" if encrypted else "")
    return f"{config_day_prefix(name, day)}{name}_{stamp}_{tree_sha256[:8]}{suffix}"


def day_of_config_key(key: str) -> str:
    parts = key.split("/")
    return parts[2] if len(parts) > 3 else ""


# --- data exports -----------------------------------------------------------------------------
EXPORTS = "exports"


def exports_prefix(database: str) -> str:
    return f"{EXPORTS}/{database}/"


def export_key(database: str, export_id: str) -> str:
    return f"{exports_prefix(database)}{export_id}.zip"


# --- servers ----------------------------------------------------------------------------------
def globals_key(server: str, day: str) -> str:
    return f"{_SERVERS}/{server}/globals/{day}.sql"
