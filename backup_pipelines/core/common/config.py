"""The operator's configuration file: loading, validation and `${VAR}` expansion.

The file is a public contract (see README). Values may contain `${VAR}`; those are expanded
only when a run needs them (`expand_env`), so a secret never has to sit in the file, in
Dagster's run config or in the definitions.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_FILE = "backup_pipelines.yaml"
CONFIG_PATH_ENV = "BACKUP_PIPELINES_CONFIG"

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DATABASE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file, the key and the fix."""


def expand_env(value: str, key: str) -> str:
    """Replace every `${VAR}` in `value` from the environment; `key` names the setting."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{key}: environment variable {name} is not set; export it before the run "
                f"(the value of {key} refers to ${{{name}}})"
            )
        return os.environ[name]

    return _ENV_REFERENCE.sub(replace, value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectLockConfig(_Strict):
    """S3 Object Lock on archive copies: nobody (COMPLIANCE) or only privileged roles
    (GOVERNANCE) can delete or shorten them before the retain-until date."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    # Retain each archive this many days from its day; default: the retention policy's
    # `daily` count, the window in which the policy keeps every backup.
    days: int | None = Field(default=None, ge=1)


class RemoteStorageConfig(_Strict):
    """Where in a bucket or container the backups go: dumps/, refs/ and archive/ under `prefix`,
    or the archive under its own `archive_prefix`."""

    prefix: str = ""
    archive_prefix: str | None = None

    @field_validator("prefix", "archive_prefix")
    @classmethod
    def _strip_slashes(cls, value: str | None) -> str | None:
        return None if value is None else value.strip("/")


class S3StorageConfig(RemoteStorageConfig):
    bucket: str = Field(min_length=3)
    endpoint_url: str | None = None
    region: str | None = None
    archive_bucket: str | None = None
    archive_storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    # Some S3-compatible stores allow only 1,000 parts; AWS allows 10,000.
    max_parts: int = Field(default=10_000, ge=10, le=10_000)
    # Lifecycle rules (see `python -m backup_pipelines.core.retention.lifecycle`): archives move
    # to a colder storage class after this many days.
    archive_transition_days: int | None = Field(default=None, ge=1)
    archive_transition_storage_class: str = "GLACIER_IR"
    # The archive bucket must have Object Lock enabled (it is set when a bucket is created).
    object_lock: ObjectLockConfig | None = None
    # Default: the standard AWS credential chain. A replica in another account names its own
    # keys here, as ${VAR}s.
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @model_validator(mode="after")
    def _kms_needs_sse(self) -> S3StorageConfig:
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id is set but sse is not 'aws:kms'; set sse: aws:kms")
        return self

    @model_validator(mode="after")
    def _keys(self) -> S3StorageConfig:
        _require_reference("access_key_id", self.access_key_id, "AWS_ACCESS_KEY_ID")
        _require_reference("secret_access_key", self.secret_access_key, "AWS_SECRET_ACCESS_KEY")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


def _require_reference(name: str, value: str | None, example: str) -> None:
    """Secrets are named in the file, never written there."""
    if value is not None and not _ENV_REFERENCE.fullmatch(value.strip()):
        raise ValueError(
            f"{name} must be an environment reference such as ${{{example}}}: "
            "a secret does not belong in the configuration file"
        )


class AzureStorageConfig(RemoteStorageConfig):
    """A container of an Azure storage account. Credentials: `connection_string` or
    `sas_token` (each a ${VAR}), else the standard Azure chain for `account_url`."""

    container: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    account_url: str | None = None  # https://<account>.blob.core.windows.net
    connection_string: str | None = None
    sas_token: str | None = None
    archive_container: str | None = None
    # Online tiers only: the archive copy is read back at once, and an Archive-tier blob cannot
    # be read until rehydrated (move copies there with a lifecycle management policy).
    archive_tier: Literal["Hot", "Cool", "Cold"] | None = None

    @model_validator(mode="after")
    def _credentials(self) -> AzureStorageConfig:
        _require_reference(
            "connection_string", self.connection_string, "AZURE_STORAGE_CONNECTION_STRING"
        )
        _require_reference("sas_token", self.sas_token, "AZURE_STORAGE_SAS_TOKEN")
        if self.connection_string is None and self.account_url is None:
            raise ValueError("give account_url (or a connection_string)")
        if self.connection_string is not None and self.sas_token is not None:
            raise ValueError("give connection_string or sas_token, not both")
        return self


class GcsStorageConfig(RemoteStorageConfig):
    """A Google Cloud Storage bucket. Credentials: `credentials_file` (a service account key's
    path), else the standard Google chain."""

    bucket: str = Field(min_length=3)
    project: str | None = None
    credentials_file: str | None = None
    archive_bucket: str | None = None
    archive_storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = None


class LocalStorageConfig(_Strict):
    path: str = Field(min_length=1)
    archive_path: str | None = None


STORAGE_KINDS = ("s3", "azure", "gcs", "local")


class StorageConfig(_Strict):
    SECTION: ClassVar[str] = "storage"  # where it sits in the file, for messages

    s3: S3StorageConfig | None = None
    azure: AzureStorageConfig | None = None
    gcs: GcsStorageConfig | None = None
    local: LocalStorageConfig | None = None
    # Room the backups may use; the storage_usage asset's check fails above 80% of it.
    capacity_gb: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> StorageConfig:
        given = [kind for kind in STORAGE_KINDS if getattr(self, kind)]
        if len(given) != 1:
            at = self.SECTION
            raise ValueError(
                f"give exactly one of {at}.s3, {at}.azure, {at}.gcs or {at}.local"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        """Which of STORAGE_KINDS is configured (exactly one is)."""
        return next(kind for kind in STORAGE_KINDS if getattr(self, kind))


def _require_cron(value: str) -> str:
    from backup_pipelines.dagster_private import is_valid_cron_string

    if not is_valid_cron_string(value):
        raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 2 * * *')")
    return value


def longest_cron_interval(cron: str) -> dt.timedelta:
    """The longest time between two of the next 13 runs of `cron` (UTC): a year of a monthly
    schedule, the worst gap a daily one leaves."""
    import itertools

    from backup_pipelines.dagster_private import cron_string_iterator

    fires = cron_string_iterator(dt.datetime.now(dt.UTC).timestamp(), cron, "UTC")
    moments = list(itertools.islice(fires, 13))
    return max(later - earlier for earlier, later in itertools.pairwise(moments))


class ObjectivesConfig(_Strict):
    """Recovery objectives: the most data (RPO) and the longest restore (RTO) a database or a
    server may lose or take, in minutes. A missed objective is a WARN, or an ERROR with
    `severity: error`."""

    rpo_minutes: float | None = Field(default=None, gt=0)
    rto_minutes: float | None = Field(default=None, gt=0)
    severity: Literal["warn", "error"] | None = None

    def unset(self) -> list[str]:
        return [f for f in ("rpo_minutes", "rto_minutes") if getattr(self, f) is None]

    def over(self, defaults: ObjectivesConfig | None) -> ObjectivesConfig:
        """These objectives, with what they leave unset taken from `defaults`."""
        if defaults is None:
            return self
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class RestoreAssertion(_Strict):
    """A query run against each restore-tested copy; it must return one value equal to `expect`."""

    name: str = Field(min_length=1)
    sql: str = Field(min_length=1)
    expect: bool | int | float | str | None


_RULE_NAMES = ("daily", "weekly", "monthly", "yearly")


class RetentionOverride(_Strict):
    """Per-database changes to the retention policy; unset fields come from `retention:`."""

    daily: int | None = Field(default=None, ge=0)
    weekly: int | None = Field(default=None, ge=0)
    monthly: int | None = Field(default=None, ge=0)
    yearly: int | None = Field(default=None, ge=0)
    min_keep: int | None = Field(default=None, ge=1)
    dump_days: int | None = Field(default=None, ge=1)


class ReplicaConfig(StorageConfig):
    """The second, independent copy: every verified archive is copied to this store (its own
    credentials; S3 in another region or account, Azure, GCS or a folder) and proved there."""

    SECTION: ClassVar[str] = "replica"

    # The replica may keep longer (or shorter) than `retention:`; unset fields come from there.
    retention: RetentionOverride | None = None
    # The alerts sensor reports a database whose newest replica is older than this.
    max_age_days: float = Field(default=2, gt=0)
    # The failover drill: restore tests that read only the replica (monthly by default).
    drill_schedule: str = "0 5 1 * *"

    @field_validator("drill_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _require_cron(value)


class RetentionRules(_Strict):
    """How many backups to keep (restic `forget` semantics, UTC; see README)."""

    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=12, ge=0)
    yearly: int = Field(default=0, ge=0)
    min_keep: int = Field(default=3, ge=1)
    # Dumps (the hot copies) are kept this many days once their archive copy exists.
    dump_days: int = Field(default=2, ge=1)

    def overridden(self, override: RetentionOverride | None) -> RetentionRules:
        """These rules with `override`'s set fields on top."""
        changes = override.model_dump(exclude_none=True) if override else {}
        own = self.model_dump(include=set(RetentionRules.model_fields))
        return RetentionRules.model_validate({**own, **changes})

    @model_validator(mode="after")
    def _some_rule(self) -> RetentionRules:
        if not any(getattr(self, rule) for rule in _RULE_NAMES):
            raise ValueError(
                "every rule (daily, weekly, monthly, yearly) is 0, which would keep only "
                "min_keep backups; set at least one of them"
            )
        return self


class RetentionConfig(RetentionRules):
    # Plan and report what would be deleted, delete nothing.
    dry_run: bool = False


class DatabaseConfig(_Strict):
    url: str = Field(min_length=1, description="libpq URL; may use ${VAR}")
    # Names the pool that caps parallel dumps; databases on one server should share it. A name
    # from servers: also says the database is on that archiving server (its recovery point).
    server: str | None = None
    restore_assertions: list[RestoreAssertion] = []
    retention: RetentionOverride | None = None
    objectives: ObjectivesConfig | None = None


class RestoreTestConfig(_Strict):
    # libpq URL of the scratch server (its database is only used to connect); the role needs
    # CREATEDB. Default: each database's own url, i.e. the source server.
    url: str | None = None
    jobs: int = Field(default=2, ge=1, le=64)
    schedule: str = "0 3 * * 0"
    test_each_new_archive: bool = False
    # Where archives are decompressed for pg_restore -j; needs room for the largest dump.
    scratch_dir: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _require_cron(value)


class VerificationConfig(_Strict):
    # A size change beyond this fraction of the recent median is reported as a warning.
    size_change_warn: float = Field(default=0.5, gt=0)
    size_history: int = Field(default=7, ge=1, le=60)


class WebhookConfig(_Strict):
    url: str = Field(min_length=1)
    # Signs each body with HMAC-SHA256 (header X-Backup-Pipelines-Signature); use ${VAR}.
    secret: str | None = None


class SlackConfig(_Strict):
    token: str = Field(min_length=1, description="bot token; use ${VAR}")
    channel: str = Field(min_length=1)
    base_url: str | None = None  # another Slack API endpoint (a proxy, or a test server)


class EmailConfig(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ca_file: str | None = None  # trust this CA for STARTTLS (a private mail relay)
    sender: str = Field(min_length=3)
    to: list[str] = Field(min_length=1)
    username: str | None = None
    password: str | None = None  # use ${VAR}


class AlertsConfig(_Strict):
    ui_base_url: str = "http://127.0.0.1:3000"
    freshness_hours: float = Field(default=25, gt=0)
    restore_test_max_age_days: float = Field(default=8, gt=0)
    webhook: WebhookConfig | None = None
    slack: SlackConfig | None = None
    email: EmailConfig | None = None
    # node-exporter textfile collector file, rewritten on every alerts sensor tick.
    metrics_textfile: str | None = None


LIFECYCLE_STORAGE_CLASSES = (
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
)


class SourceLifecycleRule(_Strict):
    """A lifecycle rule this project keeps on a source bucket (the application's own files):
    objects under `prefix` move to `storage_class` after `transition_days` and/or are deleted
    after `expire_days`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    prefix: str = ""  # from the bucket's root; "" is the whole bucket
    transition_days: int | None = Field(default=None, ge=1)
    storage_class: Literal[LIFECYCLE_STORAGE_CLASSES] | None = None  # type: ignore[valid-type]
    expire_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _actions(self) -> SourceLifecycleRule:
        if self.transition_days is None and self.expire_days is None:
            raise ValueError(f"rule {self.name!r}: give transition_days, expire_days or both")
        if (self.transition_days is None) != (self.storage_class is None):
            raise ValueError(f"rule {self.name!r}: transition_days and storage_class go together")
        if self.transition_days and self.expire_days and self.expire_days <= self.transition_days:
            raise ValueError(
                f"rule {self.name!r}: expire_days ({self.expire_days}) must come after "
                f"transition_days ({self.transition_days})"
            )
        return self


class BucketConfig(_Strict):
    """An S3 bucket (or a prefix of it) whose objects are snapshotted daily."""

    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = None  # default: storage.s3.endpoint_url
    region: str | None = None
    # Default: the standard AWS credential chain. Use ${VAR}.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # Share of stored objects a verification reads back (1.0: all of them).
    verify_fraction: float = Field(default=1.0, gt=0, le=1)
    retention: RetentionOverride | None = None
    # Lifecycle rules for the source bucket itself, set by the lifecycle command.
    lifecycle: list[SourceLifecycleRule] = []

    @model_validator(mode="after")
    def _distinct_rule_names(self) -> BucketConfig:
        names = [rule.name for rule in self.lifecycle]
        if len(names) != len(set(names)):
            raise ValueError(f"lifecycle rule names repeat: {', '.join(names)}")
        return self


class EncryptionConfig(_Strict):
    """Client-side encryption with age; give the identity as ${VAR}, or KMS-wrapped."""

    identity: str | None = None  # AGE-SECRET-KEY-1…, as ${VAR}
    kms_wrapped_identity: str | None = None  # base64 KMS CiphertextBlob of the identity
    kms_region: str | None = None
    kms_endpoint_url: str | None = None
    # Identities used before a key rotation, as ${VAR}s: backups encrypted to them stay readable.
    previous_identities: list[str] = []

    @model_validator(mode="after")
    def _one_key(self) -> EncryptionConfig:
        if (self.identity is None) == (self.kms_wrapped_identity is None):
            raise ValueError("give exactly one of identity or kms_wrapped_identity")
        for name, value in [("identity", self.identity)] + [
            (f"previous_identities[{n}]", v) for n, v in enumerate(self.previous_identities)
        ]:
            _require_reference(name, value, "BACKUP_AGE_IDENTITY")
        return self


class PgBackRestS3Config(_Strict):
    """A pgBackRest repository in S3. pgBackRest speaks HTTPS only."""

    bucket: str | None = None  # default: storage.s3.bucket
    prefix: str | None = None  # default: pgbackrest/<server>
    endpoint: str | None = None  # host[:port]; default: s3.<region>.amazonaws.com
    region: str = "us-east-1"
    uri_style: Literal["host", "path"] = "host"
    ca_file: str | None = None  # trust this CA (a private endpoint)
    verify_tls: bool = True
    # Default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment, else the
    # instance's role. Use ${VAR}.
    access_key_id: str | None = None
    secret_access_key: str | None = None


class PgBackRestRepositoryConfig(_Strict):
    """One pgBackRest repository: a folder or S3, optionally encrypted."""

    path: str | None = None
    s3: PgBackRestS3Config | None = None
    cipher_pass: str | None = None  # repository encryption (aes-256-cbc); use ${VAR}

    @model_validator(mode="after")
    def _exactly_one(self) -> PgBackRestRepositoryConfig:
        if (self.path is None) == (self.s3 is None):
            raise ValueError("give exactly one of pgbackrest.path or pgbackrest.s3")
        _require_reference("cipher_pass", self.cipher_pass, "PGBACKREST_CIPHER_PASS")
        return self


class PgBackRestConfig(PgBackRestRepositoryConfig):
    """Where pgBackRest keeps a server's base backups and WAL (repository 1), and optionally a
    second, independent repository (`repo2`: WAL is pushed to both)."""

    repo2: PgBackRestRepositoryConfig | None = None
    stanza: str | None = None  # default: the server's name
    # Small files bundled into few objects: far fewer requests against S3.
    bundle: bool = True
    compress_type: Literal["zst", "lz4", "gz", "bz2", "none"] = "zst"
    process_max: int = Field(default=2, ge=1, le=64)
    # pgBackRest's lock and log folders for this server (default: folders of this project's
    # own under the temp folder, per OS user, stanza and repository; never /tmp/pgbackrest,
    # which one OS user's first run would own for every other).
    lock_path: str | None = None
    log_path: str | None = None
    log_level_file: Literal["off", "error", "warn", "info", "detail"] = "off"


class PitrRestoreTestConfig(_Strict):
    schedule: str = "0 4 * * 0"
    after_full_backup: bool = True  # also test after each new full backup
    # With pgbackrest.repo2: the failover drill, a PITR restore test from the second alone.
    repo2_schedule: str = "0 5 1 * *"
    port: int | None = Field(default=None, ge=1024, le=65535)  # default: a free port
    scratch_dir: str | None = None  # default: the system temp folder; needs room for a copy

    @field_validator("schedule", "repo2_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _require_cron(value)


class PgBackRestServerConfig(_Strict):
    """The database host's pgBackRest TLS server (`pgbackrest server`): backups are then driven
    from this machine (a repository host) without access to the data directory."""

    host: str = Field(min_length=1)
    port: int = Field(default=8432, ge=1, le=65535)
    ca_file: str = Field(min_length=1)  # the CA that signed the server's certificate
    cert_file: str = Field(min_length=1)  # this client's certificate (its CN is authorized)
    key_file: str = Field(min_length=1)


class ServerConfig(_Strict):
    """A PostgreSQL server (cluster) with WAL archiving: point-in-time recovery."""

    url: str = Field(min_length=1, description="libpq URL of a role that may run backups")
    data_directory: str = Field(min_length=1)
    # pgBackRest reaches PostgreSQL over its Unix socket; default: the URL's host when it is
    # a folder, else /var/run/postgresql.
    socket_directory: str | None = None
    pgbackrest: PgBackRestConfig
    pgbackrest_server: PgBackRestServerConfig | None = None
    # The OS user pgBackRest and pg_ctl run as; default: the data directory's owner (postgres
    # with pgbackrest_server).
    os_user: str | None = None
    backup_schedule: str = "0 1 * * *"  # a base backup each day
    full_backup: str = "0 1 * * 0"  # days this cron falls on take a full, others a diff
    archive_lag_alert_minutes: float = Field(default=15, gt=0)
    base_backup_max_age_days: float = Field(default=2, gt=0)
    # Full backups kept (GFS rules, as for dumps); WAL is kept back to the oldest kept one.
    retention: RetentionOverride | None = None
    restore_test: PitrRestoreTestConfig = PitrRestoreTestConfig()
    objectives: ObjectivesConfig | None = None

    @field_validator("backup_schedule", "full_backup")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _require_cron(value)


_MEBIBYTE = 1024 * 1024
# Lines whose setting name matches one of these have their value redacted wherever a
# configuration's text is shown (diffs, messages); `configs.<name>.redact` adds more.
DEFAULT_REDACTIONS = ("password", "passwd", "secret", "token", "key", "credential")


class CommandSourceConfig(_Strict):
    """A program whose standard output is the configuration export (no shell)."""

    argv: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(default=60, gt=0)
    # Set for the program only; values may (and secrets must) be ${VAR} references.
    env: dict[str, str] = {}
    filename: str = Field(default="export", pattern=r"^[A-Za-z0-9._-]+$")
    max_bytes: int = Field(default=64 * _MEBIBYTE, gt=0)

    @field_validator("argv")
    @classmethod
    def _no_secrets_in_argv(cls, argv: list[str]) -> list[str]:
        if any(_ENV_REFERENCE.search(arg) for arg in argv):
            raise ValueError(
                "argv must not contain ${VAR} references: every process on the host can read "
                "argv; pass the value in env: and let the program read it from there"
            )
        return argv


class HttpSourceConfig(_Strict):
    """A URL answering with the configuration export (GET, TLS verified)."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}  # values may (and secrets must) be ${VAR} references
    timeout_seconds: float = Field(default=30, gt=0)
    max_bytes: int = Field(default=16 * _MEBIBYTE, gt=0)
    ca_file: str | None = None  # trust this CA (a private endpoint)
    filename: str = Field(default="export", pattern=r"^[A-Za-z0-9._-]+$")


class ConfigSourceConfig(_Strict):
    """Configuration to back up: files (paths and globs), a command's output or a URL's
    answer, each snapshot one archive with a manifest."""

    files: list[str] = []
    command: CommandSourceConfig | None = None
    http: HttpSourceConfig | None = None
    # Regular expressions (multi-line) the delivered text must match, e.g. a required section
    # '^\\[database\\]'; config_complete fails naming each one missing.
    expect: list[str] = []
    redact: list[str] = []  # more setting-name patterns whose values are never shown
    retention: RetentionOverride | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ConfigSourceConfig:
        given = [kind for kind in ("files", "command", "http") if getattr(self, kind)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of files, command or http"
                + (f" (found {', '.join(given)})" if given else "")
            )
        for pattern in [*self.expect, *self.redact]:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in ("files", "command", "http") if getattr(self, kind))


def server_config_source(server: str) -> str:
    """The name of the configuration source every server gets: its PostgreSQL files."""
    return f"{server}_postgresql"


class ExportsConfig(_Strict):
    """Data exports on request (job export_data): what one may hold, how long it is kept."""

    max_rows: int = Field(default=10_000_000, ge=1)
    max_bytes: int = Field(default=10 * 1024**3, ge=1)  # of the ZIP
    expire_days: int = Field(default=7, ge=1)  # the retention run deletes older exports


class AuditConfig(_Strict):
    days: int = Field(default=90, ge=1, le=3660)  # the period the audit report covers


class BackupConfig(_Strict):
    storage: StorageConfig
    replica: ReplicaConfig | None = None
    databases: dict[str, DatabaseConfig] = Field(min_length=1)
    schedule: str = "0 2 * * *"
    start_date: dt.date = dt.date(2026, 1, 1)
    pg_bin_dir: str | None = None
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    compression_level: int | None = Field(default=None, ge=1, le=19)
    verification: VerificationConfig = VerificationConfig()
    restore_test: RestoreTestConfig = RestoreTestConfig()
    retention: RetentionConfig = RetentionConfig()
    alerts: AlertsConfig = AlertsConfig()
    audit: AuditConfig = AuditConfig()
    buckets: dict[str, BucketConfig] = {}
    servers: dict[str, ServerConfig] = {}
    configs: dict[str, ConfigSourceConfig] = {}
    exports: ExportsConfig = ExportsConfig()
    encryption: EncryptionConfig | None = None
    objectives: ObjectivesConfig | None = None
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("databases", "buckets", "servers", "configs")
    @classmethod
    def _database_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _DATABASE_NAME.match(name):
                raise ValueError(
                    f"name {name!r} must be lower case letters, digits and _, "
                    "starting with a letter (it becomes part of asset keys and object names)"
                )
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _require_cron(value)

    @model_validator(mode="after")
    def _buckets_need_s3(self) -> BackupConfig:
        if self.buckets and self.storage.s3 is None:
            raise ValueError(
                "buckets: snapshots of S3 buckets are kept in S3 (server-side copies); "
                "configure storage.s3"
            )
        return self

    @model_validator(mode="after")
    def _retention_per_database(self) -> BackupConfig:
        for name in self.databases:
            try:
                self.retention_for(name)
            except ValidationError as error:
                raise ValueError(
                    f"databases.{name}.retention: {error.errors()[0]['msg']}"
                ) from None
        return self

    @model_validator(mode="after")
    def _replica_retention(self) -> BackupConfig:
        if self.replica is not None:
            try:
                self.replica_retention_for(next(iter(self.databases)))
            except ValidationError as error:
                raise ValueError(f"replica.retention: {error.errors()[0]['msg']}") from None
        return self

    @model_validator(mode="after")
    def _objectives_complete_and_achievable(self) -> BackupConfig:
        for kind, entries in (("databases", self.databases), ("servers", self.servers)):
            for name in entries:
                objectives = self.objectives_for(kind, name)
                if objectives is None:
                    continue
                unset = [
                    f for f in ("rpo_minutes", "rto_minutes") if getattr(objectives, f) is None
                ]
                if unset:
                    raise ValueError(
                        f"{kind}.{name}.objectives: {' and '.join(unset)} set neither there nor "
                        "in objectives: (give both an RPO and an RTO)"
                    )
                if kind == "databases":
                    self._require_dump_can_meet(name, objectives)
        return self

    def _require_dump_can_meet(self, database: str, objectives: ObjectivesConfig) -> None:
        """A database's RPO no schedule can meet: newer than its dumps' interval, with no
        archiving server behind it."""
        if self.databases[database].server in self.servers:
            return
        interval = longest_cron_interval(self.schedule).total_seconds() / 60
        rpo = objectives.rpo_minutes or 0
        if rpo < interval:
            raise ValueError(
                f"databases.{database}.objectives.rpo_minutes: {rpo:g} min cannot be met: "
                f"{database} is backed up by dumps on '{self.schedule}' (up to {interval:g} min "
                f"apart) and is on no archiving server; set rpo_minutes to at least {interval:g}"
                f" plus the time a dump and its verification take (e.g. {interval * 25 / 24:g}),"
                f" or name its archiving server (one of servers:) in databases.{database}.server"
            )

    @model_validator(mode="after")
    def _config_names_free(self) -> BackupConfig:
        for server in self.servers:
            if server_config_source(server) in self.configs:
                raise ValueError(
                    f"configs.{server_config_source(server)}: the name is taken by the source "
                    f"every server gets for its PostgreSQL files (servers.{server}); choose "
                    "another name"
                )
        return self

    def config_sources(self) -> list[str]:
        """Every configuration source: those of `configs:`, then each server's own."""
        return [*self.configs, *map(server_config_source, self.servers)]

    def config_retention_for(self, name: str) -> RetentionRules:
        source = self.configs.get(name)
        return self.retention.overridden(source.retention if source else None)

    def objectives_for(self, kind: str, name: str) -> ObjectivesConfig | None:
        """What database or server `name` promises (`kind`: databases or servers): its own
        objectives over the global ones; None: it promises nothing."""
        entry = self.databases[name] if kind == "databases" else self.servers[name]
        if entry.objectives is None:
            return self.objectives
        return entry.objectives.over(self.objectives)

    def retention_for(self, database: str) -> RetentionRules:
        return self.retention.overridden(self.databases[database].retention)

    def replica_retention_for(self, database: str) -> RetentionRules:
        """The database's rules with the replica's own overrides on top."""
        override = self.replica.retention if self.replica else None
        return self.retention_for(database).overridden(override)

    def archive_retain_until(
        self, database: str, day: str, *, replica: bool = False
    ) -> dt.datetime | None:
        """Until when `database`'s archive of `day` (in the replica store, with `replica`) is
        under Object Lock (None: no lock)."""
        storage = self.replica if replica else self.storage
        lock = storage.s3.object_lock if storage and storage.s3 else None
        if lock is None:
            return None
        rules = self.replica_retention_for(database) if replica else self.retention_for(database)
        start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
        return start + dt.timedelta(days=lock.days or max(rules.daily, 1))

    def server_retention_for(self, name: str) -> RetentionRules:
        return self.retention.overridden(self.servers[name].retention)

    def bucket_retention_for(self, name: str) -> RetentionRules:
        return self.retention.overridden(self.buckets[name].retention)

    def local_path(self, path: str, key: str = "storage.local.path") -> Path:
        """A path from the file (`key` names its setting), relative to the file's folder."""
        expanded = Path(expand_env(path, key)).expanduser()
        return expanded if expanded.is_absolute() else (self.base_dir / expanded).resolve()


def config_path_from_env() -> Path:
    return Path(os.environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_FILE).resolve()


def load_config(path: Path | str | None = None) -> BackupConfig:
    """Read and validate the configuration file; errors name the file and the key."""
    path = Path(path).resolve() if path else config_path_from_env()
    if not path.is_file():
        raise ConfigError(
            f"configuration file {path} does not exist; create it (see README) or set "
            f"{CONFIG_PATH_ENV} to its path"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, base_dir=path.parent, source=str(path))


def parse_config(raw: Any, *, base_dir: Path, source: str = "configuration") -> BackupConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with storage: and databases:")
    try:
        return BackupConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as error:
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"{source} is invalid:\n{problems}") from None
