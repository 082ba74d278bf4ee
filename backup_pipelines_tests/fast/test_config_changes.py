"""What a configuration's diff may show: every kind of secret redacted, the rest as it is;
which files a server's postgresql.conf includes."""

from pathlib import Path

import pytest

from backup_pipelines.core.common.config import DEFAULT_REDACTIONS
from backup_pipelines.core.configs.changes import REDACTED, Redactor, as_text, compare
from backup_pipelines.core.configs.sources import ConfigFile, with_includes

SECRET = "S3cr3t-value"
REDACT = Redactor([*DEFAULT_REDACTIONS, "dsn"])


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (f"password = {SECRET}", f"password = {REDACTED}"),
        (f"db_password: '{SECRET}'", f"db_password: {REDACTED}"),
        (f'  "api_key": "{SECRET}",', f'  "api_key": {REDACTED},'),
        (f"AWS_SECRET_ACCESS_KEY={SECRET}", f"AWS_SECRET_ACCESS_KEY={REDACTED}"),
        (
            f"primary_conninfo = 'host=db1 user=rep password={SECRET}'",
            f"primary_conninfo = 'host=db1 user=rep password={REDACTED}'",
        ),
        (f"url = postgresql://app:{SECRET}@db1/app", f"url = postgresql://app:{REDACTED}@db1/app"),
        (f"dsn = host=db1 {SECRET}", f"dsn = {REDACTED}"),  # a pattern of redact:
        ("max_connections = 100", "max_connections = 100"),
        ("# password = see the vault", "# password = see the vault"),  # a comment stays
    ],
)
def test_secrets_are_redacted_and_the_rest_is_kept(line, shown):
    assert REDACT.line(line + "\n") == shown + "\n"


def test_a_private_key_block_is_redacted_whole():
    text = f"-----BEGIN PRIVATE KEY-----\n{SECRET}\nMIIE\n-----END PRIVATE KEY-----\n"
    assert SECRET not in REDACT.text(text) and "MIIE" not in REDACT.text(text)


def _file(path: str, sha256: str, mode: str = "0644") -> ConfigFile:
    return ConfigFile(path, f"/{path}", 1, sha256, mode, "postgres", "postgres")


def test_compare_lists_added_removed_changed_and_mode_changes_with_a_redacted_diff():
    before = [_file("a.conf", "1"), _file("b.conf", "2"), _file("c.conf", "3")]
    after = [_file("a.conf", "9"), _file("c.conf", "3", "0600"), _file("d.conf", "4")]
    old = {"a.conf": f"port = 5432\npassword = {SECRET}\n"}
    new = {"a.conf": "port = 6432\npassword = other\n"}
    changes = compare(before, after, old, new, REDACT, ("old", "new"))
    assert (changes.added, changes.removed, changes.changed) == (["d.conf"], ["b.conf"], ["a.conf"])
    assert changes.attributes == ["c.conf"]
    assert "-port = 5432" in changes.diff and "+port = 6432" in changes.diff
    assert SECRET not in changes.diff and "other" not in changes.diff


def test_binary_and_large_files_are_not_diffed():
    assert as_text(b"\x00\x01") is None and as_text(b"\xff\xfe") is None
    assert as_text(b"x" * (1024 * 1024 + 1)) is None
    assert as_text(b"port = 1\n") == "port = 1\n"


def test_includes_are_followed_relative_to_the_including_file(tmp_path: Path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("work_mem = '8MB'\n")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("")
    (tmp_path / "conf.d" / "notes.txt").write_text("")
    (tmp_path / "tuning.conf").write_text("include 'conf.d/b.conf'\n")  # included twice
    main = tmp_path / "postgresql.conf"
    main.write_text(
        "include 'tuning.conf'\n"
        "include_if_exists 'absent.conf'\n"
        "include_dir = 'conf.d'\n"
        "# include 'commented.conf'\n"
    )
    assert list(with_includes([main])) == [
        main,
        tmp_path / "tuning.conf",
        tmp_path / "conf.d" / "b.conf",
    ]
