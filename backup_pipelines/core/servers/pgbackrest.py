"""The physical-backup engine: pgBackRest, behind this one module (WAL-G could replace it here).

Everything pgBackRest is told comes from environment variables (`PGBACKREST_*`), never from
argv or a file this project writes: the repository keys and the cipher passphrase stay out of
`ps` and logs. It runs as the owner of the data directory, as pgBackRest requires.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import pwd
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backup_pipelines.core.common.config import (
    BackupConfig,
    ConfigError,
    PgBackRestRepositoryConfig,
    expand_env,
)
from backup_pipelines.core.common.postgres_client import Connection, redact

PGBACKREST = "pgbackrest"
BACKUP_KINDS = ("full", "diff", "incr")
NO_STANZA = "no stanza"  # RepositoryInfo.status of a repository not initialised for the server
_OWN_SETTINGS = ("PGBACKREST_", "PGPASSWORD", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE")


class PgBackRestError(RuntimeError):
    """pgBackRest refused or failed; the message names the server and what to do."""


@dataclass(frozen=True)
class Repository:
    """Where and how pgBackRest keeps base backups and WAL: its options by their own names
    (e.g. {"repo1-path": "/srv/pitr", "compress-type": "zst"}), the secret ones apart. One
    repository (repo1-*) or two (repo2-* too: WAL is pushed to both)."""

    options: Mapping[str, str]
    secrets: Mapping[str, str] = field(default_factory=dict)

    def describe(self, number: int = 1) -> str:
        repo = f"repo{number}"
        if self.options.get(f"{repo}-type") == "s3":
            return (
                f"s3://{self.options[f'{repo}-s3-bucket']}{self.options.get(f'{repo}-path', '/')} "
                f"at {self.options[f'{repo}-s3-endpoint']}"
            )
        return self.options[f"{repo}-path"]

    @property
    def count(self) -> int:
        """How many repositories are configured (1 or 2)."""
        return 2 if "repo2-path" in self.options else 1

    @property
    def encrypted(self) -> bool:
        return any(name.endswith("-cipher-pass") for name in self.secrets)


@dataclass(frozen=True)
class BackupSet:
    """One base backup as `pgbackrest info` lists it."""

    label: str
    kind: str  # full, diff or incr
    started: dt.datetime
    stopped: dt.datetime  # the backup is consistent from here: the earliest recovery target
    start_lsn: str
    stop_lsn: str
    wal_start: str
    wal_stop: str
    database_bytes: int
    repository_bytes: int  # this set's own files in the repository (compressed)
    prior: str | None  # the backup a diff/incr builds on

    @property
    def seconds(self) -> float:
        return (self.stopped - self.started).total_seconds()

    @classmethod
    def from_info(cls, entry: Mapping) -> BackupSet:
        def moment(seconds: int) -> dt.datetime:
            return dt.datetime.fromtimestamp(seconds, dt.UTC)

        return cls(
            label=entry["label"],
            kind=entry["type"],
            started=moment(entry["timestamp"]["start"]),
            stopped=moment(entry["timestamp"]["stop"]),
            start_lsn=entry["lsn"]["start"],
            stop_lsn=entry["lsn"]["stop"],
            wal_start=entry["archive"]["start"],
            wal_stop=entry["archive"]["stop"],
            database_bytes=entry["info"]["size"],
            repository_bytes=entry["info"]["repository"]["delta"],
            prior=entry.get("prior"),
        )


@dataclass(frozen=True)
class RepositoryInfo:
    """What the repository holds for one stanza: its backups (oldest first) and WAL range."""

    backups: list[BackupSet]
    wal_min: str | None
    wal_max: str | None
    status: str
    archive_id: str | None = None  # the current database's archive folder, e.g. "15-1"

    @property
    def major_version(self) -> int | None:
        """The PostgreSQL major version the archive holds WAL of (from its id)."""
        return int(self.archive_id.split("-")[0]) if self.archive_id else None


@dataclass(frozen=True)
class RecoveryTarget:
    """Where a restore stops: a time, a named restore point, or the end of the archived WAL."""

    kind: str  # "time", "name" or "latest"
    value: str | None = None

    def options(self) -> dict[str, str]:
        if self.kind == "latest":
            return {"TYPE": "default"}
        target = _pgbackrest_time(str(self.value)) if self.kind == "time" else str(self.value)
        return {"TYPE": self.kind, "TARGET": target, "TARGET_ACTION": "promote"}

    def describe(self) -> str:
        return "the latest archived WAL" if self.kind == "latest" else f"{self.kind} {self.value}"


def _pgbackrest_time(value: str) -> str:
    """An ISO time as pgBackRest reads it: UTC, milliseconds (rounded up: the target never
    falls before a commit made in the same millisecond before it)."""
    moment = dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    if moment.microsecond % 1000:
        moment += dt.timedelta(microseconds=1000 - moment.microsecond % 1000)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}+00"


@dataclass(frozen=True)
class Engine:
    """pgBackRest for one PostgreSQL server (one stanza)."""

    server: str  # the configured name, used in messages
    stanza: str
    data_directory: Path
    port: int
    socket_directory: str | None
    user: str
    password: str | None
    repository: Repository
    process_max: int = 2
    timeout_seconds: int = 6 * 3600
    # pg1-host-* options when the data directory is reached through pgBackRest's TLS server on
    # the database host; empty: the data directory is on this machine.
    database_host: Mapping[str, str] = field(default_factory=dict)
    os_user: str | None = None  # pgBackRest runs as this user (when this process is root)
    lock_path: Path | None = None  # default: default_folder(..., "lock")
    log_path: Path | None = None  # default: default_folder(..., "log")
    log_level_file: str = "off"
    # The repository backups, listings, verification, expiry and restores use (of two).
    repo: int = 1

    @property
    def folders(self) -> dict[str, Path]:
        """pgBackRest's lock and log folders for this server."""
        return {
            "LOCK_PATH": self.lock_path or self.default_folder("lock"),
            "LOG_PATH": self.log_path or self.default_folder("log"),
        }

    @property
    def runs_as(self) -> str:
        """The OS user pgBackRest runs as."""
        if os.geteuid() == 0 and self.os_user:
            return self.os_user
        return pwd.getpwuid(os.geteuid()).pw_name

    def default_folder(self, kind: str) -> Path:
        """A folder of this project's own, per OS user, stanza and repository: two servers, two
        repositories or two OS users on one worker never share a lock."""
        repository = hashlib.sha256(self.repository.describe().encode()).hexdigest()[:12]
        top = Path(tempfile.gettempdir()) / f"backup_pipelines-pgbackrest-{self.runs_as}"
        return top / f"{self.stanza}-{repository}" / kind

    def prepare_folders(self) -> None:
        """Create the lock and log folders, owned by the user pgBackRest runs as; refuse one
        that another user owns (pgBackRest would fail on every command)."""
        for setting, folder in self.folders.items():
            created = [path for path in [folder, *folder.parents] if not path.exists()]
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path in created:
                self.give(path)
            owner = owner_of(folder)
            if owner != self.runs_as:
                raise PgBackRestError(
                    f"server {self.server!r}: pgBackRest's {setting.split('_')[0].lower()} "
                    f"folder {folder} belongs to {owner}, not {self.runs_as} who runs "
                    f"pgBackRest; set servers.{self.server}.pgbackrest.{setting.lower()} to a "
                    f"folder {self.runs_as} owns"
                )

    @property
    def remote(self) -> bool:
        return bool(self.database_host)

    def as_user(self) -> list[str]:
        """The prefix that runs a program as `os_user` (pgBackRest and pg_ctl refuse root)."""
        if os.geteuid() != 0 or self.os_user in (None, "root"):
            return []
        return ["runuser", "-u", str(self.os_user), "--"]

    def give(self, path: Path) -> None:
        """Hand a folder this process made to `os_user`, who writes into it."""
        if os.geteuid() == 0 and self.os_user not in (None, "root"):
            entry = pwd.getpwnam(str(self.os_user))
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def environment(self, *, local: bool = False, **extra: str) -> dict[str, str]:
        """pgBackRest's settings as PGBACKREST_* variables; `local`: for a command that works
        on this machine's files (a restore), without the database host's TLS settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_SETTINGS)}
        options = {
            "CONFIG": "/dev/null",  # only what this engine says; not /etc/pgbackrest.conf
            "STANZA": self.stanza,
            "PG1_PATH": str(self.data_directory),
            "PG1_PORT": str(self.port),
            "PG1_USER": self.user,
            "PROCESS_MAX": str(self.process_max),
            # An immediate checkpoint: else a backup waits up to checkpoint_timeout to start.
            "START_FAST": "y",
            "LOG_LEVEL_CONSOLE": "warn",
            "LOG_LEVEL_STDERR": "error",
            "LOG_LEVEL_FILE": self.log_level_file,
            **{setting: str(folder) for setting, folder in self.folders.items()},
            # Retention is applied by `expire --set` from this project's plan, never implicitly.
            **{f"REPO{n}_RETENTION_FULL": "9999999" for n in range(1, self.repository.count + 1)},
            **({"PG1_SOCKET_PATH": self.socket_directory} if self.socket_directory else {}),
            **extra,
        }
        env.update({f"PGBACKREST_{name}": value for name, value in options.items()})
        settings = {**self.repository.options, **self.repository.secrets}
        if not local:
            settings |= self.database_host
        env.update({option_variable(name): value for name, value in settings.items()})
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def run(self, command: str, *args: str, local: bool = False, **options: str) -> str:
        """Run one pgBackRest command as `os_user`; returns its stdout."""
        self.require_data_directory()
        self.prepare_folders()
        argv = [*self.as_user(), PGBACKREST, command, *self._repo_args(command), *args]
        with _process_group(argv, self.environment(local=local, **options)) as process:
            try:
                out, err = process.communicate(timeout=self.timeout_seconds)
            except subprocess.TimeoutExpired:
                raise PgBackRestError(
                    f"server {self.server!r}: pgbackrest {command} did not finish within "
                    f"{self.timeout_seconds} s"
                ) from None
        if process.returncode != 0:
            raise PgBackRestError(self._explain(command, process.returncode, err or out))
        return out

    def _repo_args(self, command: str) -> list[str]:
        """With two repositories, the one this engine works on (archive-push writes both)."""
        if self.repository.count > 1 and command in _PER_REPOSITORY:
            return [f"--repo={self.repo}"]
        return []

    def require_data_directory(self) -> None:
        if not self.remote and not self.data_directory.is_dir():
            raise PgBackRestError(
                f"server {self.server!r}: data_directory {self.data_directory} does not exist "
                f"here; set servers.{self.server}.data_directory to the server's data folder "
                "(SHOW data_directory)"
            )

    def _explain(self, command: str, code: int, output: str) -> str:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("ERROR:", "ASSERT:"))]
        message = " ".join((errors or lines)[-2:]) or f"exit status {code}"
        message = redact(message, [self.password, *self.repository.secrets.values()])
        return (
            f"server {self.server!r}: pgbackrest {command} failed: {message}{_hint(message, self)}"
        )

    # --- commands -----------------------------------------------------------------------------
    def create_stanza(self) -> None:
        """Initialise the repositories for this server (safe to repeat)."""
        for number in range(1, self.repository.count + 1):
            folder = self.repository.options.get(f"repo{number}-path")
            if self.repository.options.get(f"repo{number}-type", "posix") == "posix" and folder:
                _make_owned_folder(Path(folder), self)
        self.run("stanza-create")

    def backup(self, kind: str, before: RepositoryInfo) -> tuple[BackupSet, RepositoryInfo]:
        """Take a backup; returns it and the repository's contents after it (`before`: the
        contents before, from `info()`)."""
        if kind not in BACKUP_KINDS:
            raise PgBackRestError(
                f"server {self.server!r}: backup kind {kind!r} is not one of "
                f"{', '.join(BACKUP_KINDS)}"
            )
        known = {backup.label for backup in before.backups}
        self.run("backup", f"--type={kind}")
        after = self.info()
        new = [backup for backup in after.backups if backup.label not in known]
        if not new:
            raise PgBackRestError(
                f"server {self.server!r}: pgbackrest backup reported success "
                "but the repository lists no new backup"
            )
        return new[-1], after

    def info(self) -> RepositoryInfo:
        """The repository's backups and WAL range (NO_STANZA before stanza-create)."""
        output = self.run("info", "--output=json") or "[]"
        try:
            stanzas = json.loads(output)
        except json.JSONDecodeError:  # a wrong passphrase decrypts the info files into garbage
            raise PgBackRestError(self._explain("info", 0, _unreadable_info(output))) from None
        stanza = next((s for s in stanzas if s.get("name") == self.stanza), None)
        code = stanza["status"]["code"] if stanza else _MISSING_STANZA_PATH
        if code in (_MISSING_STANZA_PATH, _MISSING_STANZA_DATA):
            return RepositoryInfo([], None, None, NO_STANZA)
        if code not in (_OK, _NO_VALID_BACKUPS):
            problems = [repo["status"]["message"] for repo in stanza.get("repo", [])]
            message = f"ERROR: {stanza['status']['message']}: {'; '.join(problems)}"
            raise PgBackRestError(self._explain("info", code, message))
        archives = [a for a in stanza.get("archive", []) if a.get("min")]
        return RepositoryInfo(
            backups=[BackupSet.from_info(entry) for entry in stanza.get("backup", [])],
            wal_min=min((a["min"] for a in archives), default=None),
            wal_max=max((a["max"] for a in archives), default=None),
            status=stanza["status"]["message"],
            archive_id=stanza["archive"][-1]["id"] if stanza.get("archive") else None,
        )

    def verify(self) -> list[str]:
        """Check every file in the repository (checksums, WAL gaps); returns the problems."""
        try:
            self.run("verify", LOG_LEVEL_CONSOLE="info")
        except PgBackRestError as error:
            return [str(error)]
        return []

    def archive_files(self, archive_id: str) -> dict[str, dt.datetime]:
        """Every file in the WAL archive `archive_id` (segments, partial segments, history and
        backup files), by its repository path, with when it was stored: the repository's own
        listing, read through pgBackRest whatever the repository type."""
        folder = f"archive/{self.stanza}/{archive_id}"
        output = self.run("repo-ls", "--recurse", "--output=json", folder) or "{}"
        return {
            f"{folder}/{name}": dt.datetime.fromtimestamp(entry["time"], dt.UTC)
            for name, entry in json.loads(output).items()
            if entry.get("type") == "file"
        }

    def copy_out(self, path: str, destination: Path) -> None:
        """Write the repository file `path` (decrypted, as stored: still compressed) to
        `destination`, streamed."""
        self.require_data_directory()
        self.prepare_folders()
        argv = [*self.as_user(), PGBACKREST, "repo-get", *self._repo_args("repo-get"), path]
        with destination.open("wb") as out:
            done = subprocess.run(
                argv, env=self.environment(), stdout=out, stderr=subprocess.PIPE, cwd="/"
            )
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace")
            raise PgBackRestError(self._explain("repo-get", done.returncode, error))

    def restore(self, target_directory: Path, target: RecoveryTarget) -> None:
        """Restore into `target_directory` (empty or absent), set to recover to `target`."""
        self.run("restore", local=True, PG1_PATH=str(target_directory), **target.options())

    def expire(self, labels: list[str], *, dry_run: bool) -> list[str]:
        """Expire the given full backups with the backups built on them; returns pgBackRest's
        own account of what it removes (or would)."""
        removed: list[str] = []
        for label in labels:
            args = ["--dry-run"] if dry_run else []
            removed += self._expire(f"--set={label}", *args)
        return removed

    def expire_archive(self, full_backups: int) -> list[str]:
        """Remove the WAL older than the oldest of the `full_backups` fulls in the repository
        (all of them: no backup is expired by this, only WAL no backup needs)."""
        return self._expire(**{f"REPO{self.repo}_RETENTION_FULL": str(full_backups)})

    def _expire(self, *args: str, **options: str) -> list[str]:
        out = self.run("expire", *args, LOG_LEVEL_CONSOLE="info", **options)
        return [_expire_line(line) for line in out.splitlines() if _is_removal(line)]


# The commands that work on one repository; with two, `--repo` names it.
_PER_REPOSITORY = {"backup", "info", "verify", "expire", "repo-ls", "repo-get", "restore"}

# `pgbackrest info` stanza status codes
_OK, _MISSING_STANZA_PATH, _NO_VALID_BACKUPS, _MISSING_STANZA_DATA = 0, 1, 2, 3


def _unreadable_info(output: str) -> str:
    """What to say of `info` output that is not JSON (a failed decryption prints garbage)."""
    if "unable to load info file" in output:
        return "ERROR: unable to load info file: the repository's contents could not be read"
    return "ERROR: pgbackrest info printed no readable JSON"


_REMOVAL = re.compile(r"(expire|remove) (adhoc |full |diff |incr )?(backup|archive|WAL)", re.I)


def _is_removal(line: str) -> bool:
    return bool(_REMOVAL.search(line))


def _expire_line(line: str) -> str:
    return re.sub(r"^.*?INFO: (\[DRY-RUN\] )?", "", line).strip()


def option_variable(option: str) -> str:
    """The variable pgBackRest reads an option from: repo1-path -> PGBACKREST_REPO1_PATH."""
    return "PGBACKREST_" + option.upper().replace("-", "_")


_HINTS = (
    ("unable to find primary cluster", ": is the server running and reachable on its socket?"),
    ("archive_mode", ": set archive_mode=on and wal_level=replica (or logical) on the server"),
    ("archive-push", ": archive_command must run `pgbackrest ... archive-push %p`"),
    ("does not exist", ": check data_directory and the repository settings"),
    ("was not archived before", ": archive_command is not pushing WAL to this repository"),
)


_WRONG_KEY = ("unable to load info file", "cipher", "decrypt")


def _hint(message: str, engine: Engine) -> str:
    lowered = message.lower()
    if engine.remote and "unable to find primary cluster" in lowered:
        host = engine.database_host
        return (
            f": is the database host's pgBackRest TLS server (pgbackrest server) running at "
            f"{host['pg1-host']}:{host['pg1-host-port']}, accepting this client's certificate, "
            "and PostgreSQL running there?"
        )
    if engine.repository.encrypted and any(sign in lowered for sign in _WRONG_KEY):
        # pgBackRest cannot tell a wrong passphrase from damage: it decrypts into garbage.
        return (
            ": the repository is encrypted; is cipher_pass the passphrase it was created with? "
            f"(repository {engine.repository.describe()})"
        )
    for needle, hint in _HINTS:
        if needle in lowered:
            return hint
    return f" (repository {engine.repository.describe()})"


def owner_of(path: Path) -> str | None:
    """The user owning `path` (None when it is not on this machine)."""
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (FileNotFoundError, KeyError):
        return None


def _make_owned_folder(folder: Path, engine: Engine) -> None:
    """A local repository folder, owned by the user pgBackRest runs as."""
    if folder.exists():
        return
    folder.mkdir(parents=True)
    engine.give(folder)


@contextlib.contextmanager
def _process_group(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A child in a session of its own: on cancellation (any exception) the whole group is
    killed, pgBackRest's worker processes included, not only `runuser`."""
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",  # a wrong passphrase can make pgBackRest print undecodable bytes
        cwd="/",
        start_new_session=True,
    )
    try:
        yield process
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def repository_from_config(
    config: BackupConfig, server: str, *, only: int | None = None
) -> Repository:
    """The `repoN-*` options of `server`'s repositories (repo1: `pgbackrest:`, repo2: its
    `repo2:`), secrets expanded from the environment into their own mapping. With `only`, that
    repository alone, as repo1: a restore from it needs nothing of the other, not even its
    credentials."""
    settings = config.servers[server].pgbackrest
    where = f"servers.{server}.pgbackrest"
    places: list[tuple[PgBackRestRepositoryConfig, str]] = [(settings, where)]
    if settings.repo2 is not None:
        places.append((settings.repo2, f"{where}.repo2"))
    if only is not None:
        if only > len(places):
            raise ConfigError(f"{where}.repo{only} is not configured")
        places = [places[only - 1]]
    options = {"compress-type": settings.compress_type}
    secrets: dict[str, str] = {}
    for number, (place, at) in enumerate(places, start=1):
        repo = f"repo{number}"
        options[f"{repo}-bundle"] = "y" if settings.bundle else "n"
        placed, hidden = _repository_options(config, server, place, at, repo)
        options |= placed
        secrets |= hidden
    if len(places) == 2 and _location(options, "repo1") == _location(options, "repo2"):
        raise ConfigError(
            f"{where}.repo2 is the same place as repository 1 ({_location(options, 'repo1')}); "
            "a second copy must live somewhere else (another bucket, endpoint or folder)"
        )
    return Repository(options, secrets)


def _location(options: Mapping[str, str], repo: str) -> tuple[str | None, ...]:
    return tuple(
        options.get(f"{repo}-{name}") for name in ("type", "s3-endpoint", "s3-bucket", "path")
    )


def _repository_options(
    config: BackupConfig, server: str, place: PgBackRestRepositoryConfig, at: str, repo: str
) -> tuple[dict[str, str], dict[str, str]]:
    """One repository's options (and secrets) under the prefix `repo` (repo1 or repo2)."""
    options: dict[str, str] = {}
    secrets: dict[str, str] = {}
    if place.cipher_pass is not None:
        options[f"{repo}-cipher-type"] = "aes-256-cbc"
        secrets[f"{repo}-cipher-pass"] = expand_env(place.cipher_pass, f"{at}.cipher_pass")
    if place.path is not None:
        options[f"{repo}-path"] = str(config.local_path(place.path, f"{at}.path"))
        return options, secrets
    s3 = place.s3
    assert s3 is not None
    bucket = s3.bucket or (config.storage.s3.bucket if config.storage.s3 else None)
    if bucket is None:
        raise ConfigError(f"{at}.s3.bucket: give a bucket (storage is not S3)")
    host, _, port = (s3.endpoint or f"s3.{s3.region}.amazonaws.com").partition(":")
    prefix = s3.prefix if s3.prefix is not None else f"pgbackrest/{server}"
    options |= {
        f"{repo}-type": "s3",
        f"{repo}-path": "/" + prefix.strip("/"),
        f"{repo}-s3-bucket": bucket,
        f"{repo}-s3-endpoint": host.removeprefix("https://"),
        f"{repo}-s3-region": s3.region,
        f"{repo}-s3-uri-style": s3.uri_style,
        f"{repo}-storage-verify-tls": "y" if s3.verify_tls else "n",
        **({f"{repo}-storage-port": port} if port else {}),
        **({f"{repo}-storage-ca-file": s3.ca_file} if s3.ca_file else {}),
    }
    key_id = s3.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
    key_secret = s3.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and key_secret:
        secrets[f"{repo}-s3-key"] = expand_env(key_id, f"{at}.s3.access_key_id")
        secrets[f"{repo}-s3-key-secret"] = expand_env(key_secret, f"{at}.s3.secret_access_key")
    else:
        options[f"{repo}-s3-key-type"] = "auto"  # the instance's IAM role
    return options, secrets


def engine_from_config(
    config: BackupConfig, server: str, connection: Connection, *, repo: int = 1, alone: bool = False
) -> Engine:
    """pgBackRest for `server`, working on repository `repo` (of two); `alone`: with that
    repository's settings only (a restore on the day the other is gone)."""
    settings = config.servers[server]
    where = f"servers.{server}"
    host = connection.params.get("host", "")
    socket_directory = (
        str(config.local_path(settings.socket_directory, f"{where}.socket_directory"))
        if settings.socket_directory
        else (host if host.startswith("/") else None)
    )
    data_directory = config.local_path(settings.data_directory, f"{where}.data_directory")
    tls = settings.pgbackrest_server
    database_host = (
        {
            "pg1-host": tls.host,
            "pg1-host-type": "tls",
            "pg1-host-port": str(tls.port),
            "pg1-host-ca-file": tls.ca_file,
            "pg1-host-cert-file": tls.cert_file,
            "pg1-host-key-file": tls.key_file,
        }
        if tls
        else {}
    )
    default_user = "postgres" if tls else owner_of(data_directory)
    return Engine(
        server=server,
        stanza=settings.pgbackrest.stanza or server,
        data_directory=data_directory,
        port=int(connection.params.get("port", "5432")),
        socket_directory=socket_directory,
        user=connection.params.get("user", "postgres"),
        password=connection.password,
        repository=repository_from_config(config, server, only=repo if alone else None),
        process_max=settings.pgbackrest.process_max,
        database_host=database_host,
        os_user=settings.os_user or default_user,
        lock_path=_folder(config, settings.pgbackrest.lock_path, f"{where}.pgbackrest.lock_path"),
        log_path=_folder(config, settings.pgbackrest.log_path, f"{where}.pgbackrest.log_path"),
        log_level_file=settings.pgbackrest.log_level_file,
        repo=1 if alone else repo,
    )


def _folder(config: BackupConfig, value: str | None, setting: str) -> Path | None:
    return config.local_path(value, setting) if value else None
