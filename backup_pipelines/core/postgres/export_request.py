"""What someone asks to export: whole tables or filtered ones, named queries, their typed
parameters, whether to follow foreign keys to the parents; refused with a clear message
before anything is read when it cannot be right."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ParamType = Literal["int", "text", "numeric", "bool", "date", "timestamptz", "uuid"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_READ_ONLY_START = re.compile(r"^\s*(select|with|table|values)\b", re.IGNORECASE)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_BOOLEANS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}


class ExportRequestError(ValueError):
    """The request cannot be exported as asked; the message names the part and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportParam(_Strict):
    type: ParamType
    value: Any


class ExportTable(_Strict):
    """A table, whole or the rows `where` selects (`:name` placeholders, bound from params)."""

    table: str = Field(min_length=1, description="schema.table, or a table on the search path")
    where: str | None = None


class ExportQuery(_Strict):
    """A read-only query, its result written as `<name>.csv` (or .parquet)."""

    name: str = Field(pattern=_NAME)
    sql: str = Field(min_length=1)


class ExportRequest(_Strict):
    database: str = Field(min_length=1)
    tables: list[ExportTable] = []
    queries: list[ExportQuery] = []
    params: dict[str, ExportParam] = {}
    follow_parents: bool = False  # add the rows the selected rows reference, recursively
    format: Literal["csv", "parquet"] = "csv"
    requested_by: str = ""
    reason: str = ""


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": lambda v: int(v) if not isinstance(v, bool | float) else _not(v),
    "text": str,
    "numeric": lambda v: decimal.Decimal(str(v)),
    "bool": lambda v: v if isinstance(v, bool) else _BOOLEANS[str(v).lower()],
    "date": lambda v: v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)),
    "timestamptz": lambda v: _aware(
        v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
    ),
    "uuid": lambda v: uuid.UUID(str(v)),
}


def _not(value: Any) -> Any:
    raise ValueError(value)


def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("a timestamptz needs a time zone (e.g. 2026-12-07T10:00:00+00:00)")
    return moment


def bound_params(request: ExportRequest) -> dict[str, Any]:
    """Each parameter as a value of its declared type; a value that is not one is refused."""
    values = {}
    for name, param in request.params.items():
        try:
            values[name] = _CONVERT[param.type](param.value)
        except (ValueError, TypeError, KeyError, decimal.InvalidOperation, ArithmeticError):
            raise ExportRequestError(
                f"export of {request.database!r}: parameter {name!r} is declared {param.type} "
                f"but its value {str(param.value)[:40]!r} is not one"
            ) from None
    return values


def placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(_COMMENT.sub(" ", text))


def to_psycopg(text: str) -> str:
    """`:name` placeholders as psycopg's `%(name)s` (a literal % doubled, comments dropped);
    `::` casts stay."""
    return _PLACEHOLDER.sub(r"%(\1)s", _COMMENT.sub(" ", text).replace("%", "%%"))


def validate(request: ExportRequest) -> None:
    """Refuse what can be refused before reading: nothing asked for, a name used twice, a
    query that is not one read-only statement, a placeholder without a parameter."""
    where = f"export of {request.database!r}"
    if not request.tables and not request.queries:
        raise ExportRequestError(f"{where}: name at least one table or query")
    names = [q.name for q in request.queries]
    if len(names) != len(set(names)):
        raise ExportRequestError(f"{where}: query names repeat: {', '.join(names)}")
    for query in request.queries:
        body = _COMMENT.sub(" ", query.sql).strip().rstrip(";")
        if not _READ_ONLY_START.match(body) or ";" in body:
            raise ExportRequestError(
                f"{where}: query {query.name!r} is not one read-only statement (SELECT, WITH, "
                "TABLE or VALUES, no ';' between statements)"
            )
    texts = [(f"query {q.name!r}", q.sql) for q in request.queries] + [
        (f"table {t.table!r}'s where", t.where) for t in request.tables if t.where
    ]
    for what, text in texts:
        missing = sorted(set(placeholders(text)) - request.params.keys())
        if missing:
            raise ExportRequestError(
                f"{where}: {what} uses {', '.join(':' + m for m in missing)}, which params "
                "does not give"
            )
    bound_params(request)


def run_config_fields(request: ExportRequest) -> dict[str, Any]:
    """The request as job export_data's run config takes it: without the database (the asset
    names it), every parameter's value as text (converted to its type in the run)."""
    fields = request.model_dump(mode="json", exclude={"database"})
    fields["params"] = {
        name: {"type": param.type, "value": str(param.value)}
        for name, param in request.params.items()
    }
    return fields


def parse_request(database: str, fields: Any) -> ExportRequest:
    """A request as a CLI file or an HTTP body gives it, checked as far as it can be here."""
    if not isinstance(fields, dict):
        raise ExportRequestError(
            "an export request is a JSON object: {tables: [...], queries: [...], params: {...}}"
        )
    try:
        request = ExportRequest.model_validate({**fields, "database": database})
    except ValueError as error:
        raise ExportRequestError(f"export of {database!r}: {error}") from None
    validate(request)
    return request
