"""SQLite's insert path binds plain tuples itself: it must store what SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from services.aggregator.storage.log import EVENT, EVENT_ROW
from services.aggregator.storage.sqlite import SQLITE_CONVERT, sqlite_row

DIALECT = sqlite.dialect()
VALUES: dict[str, list[Any]] = {
    "event_time": [
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 23, 30, 5, 120, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 10, 25, 1, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1))),
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
    ],
    "data": [
        {"proposal": "1a", "milestone": "m1", "status": "done", "note": "Größe — “ok”"},
        {"kpi": "k", "period": "2025-Q1", "value": 1.5e300},
        {},
    ],
    "source": ["greater-manchester"],
    "stream_seq": [1, 2**62],
    "milestone": [None],
}


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in VALUES.items() for value in values]
    + [("received_at", v) for v in VALUES["event_time"]],
)
def test_each_value_is_bound_as_the_column_type_binds_it(name: str, value: Any) -> None:
    bind = EVENT.c[name].type.dialect_impl(DIALECT).bind_processor(DIALECT)
    expected = bind(value) if bind is not None and value is not None else value
    convert = SQLITE_CONVERT.get(name)
    assert (convert(value) if convert and value is not None else value) == expected


def test_every_column_that_sqlalchemy_converts_is_converted() -> None:
    assert EVENT_ROW == [c.name for c in EVENT.columns]
    converted = {
        n for n in EVENT_ROW if EVENT.c[n].type.dialect_impl(DIALECT).bind_processor(DIALECT)
    }
    # A column of a new type that SQLAlchemy converts would need a case in SQLITE_CONVERT.
    assert converted == set(SQLITE_CONVERT)


def test_a_decoded_event_row_is_bound_column_by_column() -> None:
    row = {
        "source": "np11",
        "event_id": "e-1",
        "stream_seq": 7,
        "type": "org.cotn.milestone.v1",
        "column": "devolution",
        "proposal": "2a",
        "milestone": "m1",
        "kpi": None,
        "period": "2025-06",
        "target": "milestone.2a.m1",
        "held": 12,
        "event_time": VALUES["event_time"][1],
        "received_at": VALUES["event_time"][2],
        "data": VALUES["data"][0],
        "extensions": {"traceid": "abc", "seq": 7, "sampled": True},
        "digest": "0" * 64,
    }
    expected = []
    for name in EVENT_ROW:
        bind = EVENT.c[name].type.dialect_impl(DIALECT).bind_processor(DIALECT)
        value = row[name]
        expected.append(bind(value) if bind is not None and value is not None else value)
    assert sqlite_row(row) == tuple(expected)
