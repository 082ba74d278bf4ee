"""Collecting a configuration before anything is stored: files (paths and globs), a command's
standard output, a URL's answer, or a PostgreSQL server's own configuration files.

Every item is copied into a staging folder as it is read, with its size, SHA-256, mode and
owner, so what is archived is exactly what was checksummed, and memory stays bounded. Anything
that cannot be read fails the whole collection, naming the source: a snapshot is all of a
configuration or nothing.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import os
import pwd
import re
import stat
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
import requests

from backup_pipelines.core.common.config import (
    BackupConfig,
    CommandSourceConfig,
    HttpSourceConfig,
    expand_env,
    server_config_source,
)
from backup_pipelines.core.common.postgres_client import Connection, redact
from backup_pipelines.core.common.streams import StderrTail
from backup_pipelines.storage.digest import CHUNK_SIZE

# What a command may see of this process's environment; everything else it needs is given in
# its own env: (this process holds storage credentials it has no business reading).
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_INCLUDE = re.compile(
    r"^\s*(include_dir|include_if_exists|include)\s*(?:=\s*)?'((?:[^']|'')*)'", re.MULTILINE
)


class ConfigSourceError(RuntimeError):
    """A configuration source could not be read whole; the message names it and the cause."""


@dataclass(frozen=True)
class ConfigFile:
    path: str  # its name inside the snapshot (an absolute path without its leading /)
    source: str  # where it came from: a path, the command's program, the URL without secrets
    size: int
    sha256: str
    mode: str | None  # octal, e.g. "0640"; None where the source has none (an export)
    owner: str | None
    group: str | None
    uid: int | None = None
    gid: int | None = None
    mtime: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Collection:
    """What a source delivered, staged under `folder` (one file per item, by position)."""

    name: str
    kind: str
    folder: Path
    files: list[ConfigFile] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # globs that matched nothing

    def staged(self, position: int) -> Path:
        return self.folder / f"{position:05d}"

    def add(self, item: ConfigFile) -> None:
        self.files.append(item)


def collect(config: BackupConfig, name: str, folder: Path) -> Collection:
    """Read source `name` (of `configs:`, or a server's own) into `folder`."""
    server = next((s for s in config.servers if server_config_source(s) == name), None)
    if server is not None:
        return collect_server(config, server, folder)
    source = config.configs[name]
    collection = Collection(name, source.kind, folder)
    if source.command is not None:
        _collect_command(collection, source.command)
    elif source.http is not None:
        _collect_http(collection, source.http, config)
    else:
        patterns = [
            (pattern, config.local_path(pattern, f"configs.{name}.files"))
            for pattern in source.files
        ]
        _collect_paths(collection, patterns)
    return collection


# --- files ------------------------------------------------------------------------------------
def _collect_paths(collection: Collection, patterns: Iterable[tuple[str, Path]]) -> None:
    seen: set[Path] = set()
    for pattern, resolved in patterns:
        if glob.has_magic(str(resolved)):
            matches = [Path(m) for m in sorted(glob.glob(str(resolved), recursive=True))]
            files = [m for m in matches if m.is_file()]
            if not files:
                collection.unmatched.append(pattern)
        else:
            files = _files_under(collection.name, resolved)
        for path in files:
            if path not in seen:
                seen.add(path)
                _stage_file(collection, path)


def _files_under(name: str, path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if not path.exists():
        raise ConfigSourceError(f"config {name!r}: {path} does not exist")
    return [path]


def _stage_file(collection: Collection, path: Path) -> None:
    try:
        with path.open("rb") as source:
            info = os.fstat(source.fileno())
            size, sha256 = _copy(source, collection.staged(len(collection.files)))
    except OSError as error:
        raise ConfigSourceError(
            f"config {collection.name!r}: cannot read {path}: {error.strerror or error}"
        ) from None
    collection.add(
        ConfigFile(
            path=str(path).lstrip("/"),
            source=str(path),
            size=size,
            sha256=sha256,
            mode=f"{stat.S_IMODE(info.st_mode):04o}",
            owner=_user_name(info.st_uid),
            group=_group_name(info.st_gid),
            uid=info.st_uid,
            gid=info.st_gid,
            mtime=info.st_mtime,
        )
    )


def _copy(source: IO[bytes], staged: Path, limit: int | None = None) -> tuple[int, str]:
    """Copy `source` to `staged`, hashing; (size, sha256). Raises OverflowError past `limit`."""
    digest, size = hashlib.sha256(), 0
    with staged.open("wb") as target:
        for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
            size += len(chunk)
            if limit is not None and size > limit:
                raise OverflowError(size)
            digest.update(chunk)
            target.write(chunk)
    return size, digest.hexdigest()


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _export(collection: Collection, filename: str, source: str, size: int, sha256: str) -> None:
    collection.add(
        ConfigFile(
            path=filename,
            source=source,
            size=size,
            sha256=sha256,
            mode=None,
            owner=None,
            group=None,
            mtime=time.time(),
        )
    )


# --- a command --------------------------------------------------------------------------------
def _collect_command(collection: Collection, command: CommandSourceConfig) -> None:
    name, program = collection.name, command.argv[0]
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env |= {k: expand_env(v, f"configs.{name}.command.env.{k}") for k, v in command.env.items()}
    secrets = list(env[k] for k in command.env)
    where = f"config {name!r}: command {program}"
    try:
        process = subprocess.Popen(
            command.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
    except OSError as error:
        raise ConfigSourceError(f"{where} could not start: {error.strerror or error}") from None
    assert process.stdout is not None and process.stderr is not None
    stderr = StderrTail(process.stderr)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(command.timeout_seconds, expire)
    timer.start()
    staged = collection.staged(len(collection.files))
    try:
        size, sha256 = _copy(process.stdout, staged, command.max_bytes)
    except OverflowError:
        process.kill()
        raise ConfigSourceError(
            f"{where} wrote more than max_bytes ({command.max_bytes:,} bytes); raise "
            f"configs.{name}.command.max_bytes if that is right"
        ) from None
    finally:
        code = process.wait()
        timer.cancel()
    if timed_out.is_set():
        raise ConfigSourceError(
            f"{where} timed out after {command.timeout_seconds:g} s (raise "
            f"configs.{name}.command.timeout_seconds if it needs longer)"
        )
    if code != 0:
        message = redact(stderr.text(), secrets) or "no message"
        raise ConfigSourceError(f"{where} exited with status {code}: {message}")
    _export(collection, command.filename, program, size, sha256)


# --- a URL ------------------------------------------------------------------------------------
def shown_url(url: str) -> str:
    """The URL without user, password or query (which may carry a token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _collect_http(collection: Collection, http: HttpSourceConfig, config: BackupConfig) -> None:
    name = collection.name
    url = expand_env(http.url, f"configs.{name}.http.url")
    headers = {
        k: expand_env(v, f"configs.{name}.http.headers.{k}") for k, v in http.headers.items()
    }
    secrets = [url, *headers.values(), urllib.parse.urlsplit(url).query or None]
    where = f"config {name!r}: {shown_url(url)}"
    verify: bool | str = (
        str(config.local_path(http.ca_file, f"configs.{name}.http.ca_file"))
        if http.ca_file
        else True
    )
    deadline = time.monotonic() + http.timeout_seconds
    try:
        with requests.get(
            url, headers=headers, timeout=http.timeout_seconds, stream=True, verify=verify
        ) as answer:
            if answer.status_code >= 400:
                raise ConfigSourceError(
                    f"{where} answered HTTP {answer.status_code} {answer.reason}"
                )
            announced = int(answer.headers.get("Content-Length") or 0)
            if announced > http.max_bytes:
                raise OverflowError(announced)
            staged = collection.staged(len(collection.files))
            size, sha256 = _copy(_Deadline(answer.raw, deadline), staged, http.max_bytes)
    except OverflowError:
        raise ConfigSourceError(
            f"{where} answered more than max_bytes ({http.max_bytes:,} bytes); raise "
            f"configs.{name}.http.max_bytes if that is right"
        ) from None
    except TimeoutError:
        raise ConfigSourceError(
            f"{where} did not answer in full within {http.timeout_seconds:g} s"
        ) from None
    except requests.exceptions.SSLError:
        raise ConfigSourceError(
            f"{where}: the server's TLS certificate could not be verified; give the CA that "
            f"signed it in configs.{name}.http.ca_file"
        ) from None
    except requests.RequestException as error:
        reason = redact(str(error), secrets).replace(url, shown_url(url))
        raise ConfigSourceError(f"{where} could not be read: {reason}") from None
    _export(collection, http.filename, shown_url(url), size, sha256)


class _Deadline:
    """A stream that raises TimeoutError once `deadline` (monotonic) has passed: a server that
    trickles bytes cannot hold a backup open forever."""

    def __init__(self, raw: Any, deadline: float) -> None:
        self._raw, self._deadline = raw, deadline

    def read(self, size: int) -> bytes:
        if time.monotonic() > self._deadline:
            raise TimeoutError
        return self._raw.read(size, decode_content=True)


# --- a PostgreSQL server's own files ----------------------------------------------------------
def collect_server(config: BackupConfig, server: str, folder: Path) -> Collection:
    """postgresql.conf, pg_hba.conf, pg_ident.conf, postgresql.auto.conf and every file they
    include. Read from this machine when it runs the server; through PostgreSQL
    (`pg_read_binary_file`) when the server is reached through its pgBackRest TLS server."""
    settings = config.servers[server]
    name = server_config_source(server)
    url = expand_env(settings.url, f"servers.{server}.url")
    connection = Connection.from_url(server, url)
    collection = Collection(name, "server", folder)
    with connection.connect(autocommit=True) as conn:
        try:
            paths = _server_paths(conn)
            if settings.pgbackrest_server is None:
                _collect_paths(collection, ((str(p), p) for p in with_includes(paths)))
            else:
                _collect_through_postgres(collection, conn, paths)
        except psycopg.errors.InsufficientPrivilege as error:
            raise ConfigSourceError(
                f"config {name!r}: the role of servers.{server}.url may not read the server's "
                f"configuration ({str(error).strip()}); grant it pg_read_all_settings (and "
                "pg_read_server_files where the files are read through PostgreSQL)"
            ) from None
    return collection


def _server_paths(conn: psycopg.Connection) -> list[Path]:
    row = conn.execute(
        "SELECT current_setting('config_file'), current_setting('hba_file'), "
        "current_setting('ident_file'), current_setting('data_directory')"
    ).fetchone()
    assert row is not None
    config_file, hba, ident, data = (Path(value) for value in row)
    return [config_file, hba, ident, data / "postgresql.auto.conf"]


def with_includes(paths: list[Path]) -> Iterator[Path]:
    """`paths` and every file an `include`, `include_if_exists` or `include_dir` in them names
    (relative to the including file), depth first, each once."""
    seen: set[Path] = set()
    pending = list(reversed(paths))
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        yield path
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue  # reported when it is staged
        for directive, value in reversed(_INCLUDE.findall(text)):
            target = path.parent / value.replace("''", "'")
            if directive == "include_dir":
                pending.extend(reversed(_conf_files(target)))
            elif directive == "include" or target.exists():
                pending.append(target)


def _conf_files(folder: Path) -> list[Path]:
    """What PostgreSQL reads of an include_dir: its *.conf files not starting with '.'."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.conf") if not p.name.startswith("."))


def _collect_through_postgres(
    collection: Collection, conn: psycopg.Connection, paths: list[Path]
) -> None:
    for path in paths:
        staged = collection.staged(len(collection.files))
        (data,) = conn.execute("SELECT pg_read_binary_file(%s)", [str(path)]).fetchone() or (b"",)
        staged.write_bytes(data)
        (modified,) = conn.execute(
            "SELECT extract(epoch FROM modification) FROM pg_stat_file(%s)", [str(path)]
        ).fetchone() or (0,)
        collection.add(
            ConfigFile(
                path=str(path).lstrip("/"),
                source=str(path),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                mode=None,
                owner=None,
                group=None,
                mtime=float(modified),
            )
        )
