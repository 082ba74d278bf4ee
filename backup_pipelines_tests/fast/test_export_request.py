"""An export request's parsing: placeholders, typed parameters, refusals; and the CSV record
count taken from the stream."""

import csv
import io

import pytest

from backup_pipelines.core.postgres.export import CsvRecords
from backup_pipelines.core.postgres.export_request import (
    ExportRequestError,
    bound_params,
    parse_request,
    to_psycopg,
)


def test_placeholders_become_bound_parameters_and_casts_stay():
    assert to_psycopg("SELECT :id::int, '50%' -- :note\n") == "SELECT %(id)s::int, '50%%'  \n"


def test_parameters_are_converted_to_their_type_or_refused():
    request = parse_request(
        "app",
        {
            "queries": [{"name": "q", "sql": "SELECT :a, :b, :c"}],
            "params": {
                "a": {"type": "int", "value": "42"},
                "b": {"type": "date", "value": "2026-12-07"},
                "c": {"type": "bool", "value": "false"},
            },
        },
    )
    assert [str(v) for v in bound_params(request).values()] == ["42", "2026-12-07", "False"]
    with pytest.raises(ExportRequestError, match="'t' is declared timestamptz"):
        parse_request(
            "app",
            {
                "queries": [{"name": "q", "sql": "SELECT :t"}],
                "params": {"t": {"type": "timestamptz", "value": "2026-12-07T10:00:00"}},
            },
        )
    with pytest.raises(ExportRequestError, match="name at least one table or query"):
        parse_request("app", {})
    with pytest.raises(ExportRequestError, match="a JSON object"):
        parse_request("app", ["tables"])


@pytest.mark.parametrize("size", [1, 3, 1 << 20])
def test_csv_records_are_counted_across_quoted_newlines_and_chunks(size):
    rows = [["id", "note"], ["1", "two\nlines"], ["2", 'a "quoted" word'], ["3", ""], ["4", '"\n"']]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    data = buffer.getvalue().encode()
    counter = CsvRecords()
    for start in range(0, len(data), size):
        counter.update(data[start : start + size])
    assert counter.records == len(rows)
