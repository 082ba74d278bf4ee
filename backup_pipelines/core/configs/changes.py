"""What changed between two versions of a configuration, as a person may read it: the files
added, removed and changed, and a unified diff of the text files with every secret redacted.

A value is redacted where its setting's name matches a pattern (`password = …`,
`"api_key": …`, `password=…` inside a connection string), where it is the password of a URL
(`://user:…@`), and where it is a private key block.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from backup_pipelines.core.configs.sources import ConfigFile

REDACTED = "[REDACTED]"
DIFF_FILE_LIMIT = 1024 * 1024  # larger files are listed as changed, not diffed
_DIFF_LINES_PER_FILE = 400
_DIFF_CHARS = 60_000  # of the whole diff, so the metadata stays readable
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?(-----END [A-Z ]*PRIVATE KEY-----)", re.DOTALL
)


class Redactor:
    """Redacts the values of settings whose names match any of `patterns` (case-insensitive)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        names = "|".join(f"(?:{pattern})" for pattern in patterns)
        # A whole line `name = value`, `name: value` or `name value` (quoted names too).
        self._setting = re.compile(
            rf"^(?P<lead>\s*[\"']?[\w.\-]*(?:{names})[\w.\-]*[\"']?\s*(?:[=:]\s*|\s+))"
            rf"(?P<value>\S.*?)(?P<trail>\s*,?\s*)$",
            re.IGNORECASE,
        )
        # `name=value` inside a line (a connection string, a query string).
        self._pair = re.compile(
            rf"(?P<lead>\b[\w.\-]*(?:{names})[\w.\-]*\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s'\",;&]+)",
            re.IGNORECASE,
        )

    def text(self, text: str) -> str:
        text = _PRIVATE_KEY.sub(rf"\1 {REDACTED} \2", text)
        return "".join(self.line(line) for line in text.splitlines(keepends=True))

    def line(self, line: str) -> str:
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if not body.lstrip().startswith("#"):
            body = self._setting.sub(rf"\g<lead>{REDACTED}\g<trail>", body)
            body = self._pair.sub(rf"\g<lead>{REDACTED}", body)
        body = _URL_PASSWORD.sub(rf"\1{REDACTED}@", body)
        return body + ending


@dataclass(frozen=True)
class Changes:
    added: list[str]
    removed: list[str]
    changed: list[str]  # content changed
    attributes: list[str]  # only mode or owner changed
    diff: str  # unified, redacted, of the changed text files

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.attributes)


def compare(
    before: list[ConfigFile],
    after: list[ConfigFile],
    old_texts: Mapping[str, str],
    new_texts: Mapping[str, str],
    redactor: Redactor,
    labels: tuple[str, str],
) -> Changes:
    """`before` and `after` by path; the diff covers the changed files both text maps hold."""
    old = {f.path: f for f in before}
    new = {f.path: f for f in after}
    changed = sorted(p for p in old.keys() & new.keys() if old[p].sha256 != new[p].sha256)
    attributes = sorted(
        p
        for p in old.keys() & new.keys()
        if p not in changed
        and (old[p].mode, old[p].owner, old[p].group) != (new[p].mode, new[p].owner, new[p].group)
    )
    pieces = [
        _file_diff(path, old_texts[path], new_texts[path], redactor, labels)
        for path in changed
        if path in old_texts and path in new_texts
    ]
    diff = "".join(pieces)
    if len(diff) > _DIFF_CHARS:
        diff = diff[:_DIFF_CHARS] + f"\n… (diff cut at {_DIFF_CHARS:,} characters)\n"
    return Changes(
        added=sorted(new.keys() - old.keys()),
        removed=sorted(old.keys() - new.keys()),
        changed=changed,
        attributes=attributes,
        diff=diff,
    )


def _file_diff(path: str, old: str, new: str, redactor: Redactor, labels: tuple[str, str]) -> str:
    lines = list(
        difflib.unified_diff(
            redactor.text(old).splitlines(keepends=True),
            redactor.text(new).splitlines(keepends=True),
            fromfile=f"a/{path} ({labels[0]})",
            tofile=f"b/{path} ({labels[1]})",
        )
    )
    if len(lines) > _DIFF_LINES_PER_FILE:
        lines = [*lines[:_DIFF_LINES_PER_FILE], f"… ({len(lines):,} lines in all)\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def as_text(data: bytes) -> str | None:
    """The text of a file that may be diffed (UTF-8, no NUL bytes), else None."""
    if len(data) > DIFF_FILE_LIMIT or b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None
