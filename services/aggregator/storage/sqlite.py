"""SQLite: a batch as the driver's ``executemany`` of plain tuples, then folded in SQL.

SQLite has no arrays, and building SQLAlchemy parameters row by row cost more than
SQLite's whole insert, so the rows go as plain tuples, converted as the column types would
convert them, which the driver runs in C.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.aggregator.storage.log import (
    EVENT,
    EVENT_ROW,
    NewEvent,
    newest_as_at,
    newest_of_each_key,
    projections,
    tuples,
    upsert_newest_from,
)
from shared.kinds import KINDS
from shared.tables import UtcDateTime

NAME = "sqlite"
insert = sqlite.insert
AS_AT_SETTINGS: tuple[str, ...] = ()
__all__ = [
    "AS_AT_SETTINGS", "NAME", "aware", "insert", "insert_and_project", "newest_as_at",
    "serialize_returns",
]  # fmt: skip


async def serialize_returns(connection: AsyncConnection) -> None:
    """Nothing to do: a writer's transaction began IMMEDIATE, so writers are one at a time."""


def aware(column: sa.Column[datetime]) -> sa.ColumnElement[datetime]:
    """``column`` as read in bulk: :class:`~shared.tables.UtcDateTime` restores the zone."""
    return column


def _sqlite_time(value: datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


SQLITE_CONVERT: dict[str, Callable[[Any], Any]] = {
    **{c.name: _sqlite_time for c in EVENT.columns if isinstance(c.type, UtcDateTime)},
    **{c.name: json.dumps for c in EVENT.columns if isinstance(c.type, sa.JSON)},
}
"""How each ``event`` column SQLAlchemy converts is converted for SQLite, done in C: UTC
text in SQLAlchemy's SQLite format (microseconds always written), JSON as text.
``tests/aggregator/test_store_sqlite.py`` holds these to the column types' own binding."""

_EVENT_VALUES = operator.itemgetter(*EVENT_ROW)

_SQLITE_CONVERTED = [(EVENT_ROW.index(name), convert) for name, convert in SQLITE_CONVERT.items()]


def sqlite_row(row: dict[str, Any]) -> tuple[Any, ...]:
    """An ``event`` row as the parameters of :func:`_sqlite_insert_sql`."""
    values = list(_EVENT_VALUES(row))
    for i, convert in _SQLITE_CONVERTED:
        if values[i] is not None:
            values[i] = convert(values[i])
    return tuple(values)


@cache
def _sqlite_insert_sql() -> str:
    stmt = sqlite.insert(EVENT).on_conflict_do_nothing(index_elements=["source", "event_id"])
    return str(stmt.compile(dialect=sqlite.dialect(), column_keys=EVENT_ROW))


async def insert_and_project(
    connection: AsyncConnection, events: Sequence[NewEvent], *, version: int
) -> set[tuple[str, str]]:
    """SQLite: insert-or-ignore as the driver's ``executemany`` of plain tuples, then fold
    the rows it inserted into the projections as PostgreSQL's statement does (the rows
    written carry ``version``).

    Building SQLAlchemy parameters row by row cost more than SQLite's whole insert, and
    ``executemany`` returns no rows, only how many it inserted. Those are the rows with the
    highest rowids: SQLite gives each new row the largest rowid plus one, and the caller's
    transaction began IMMEDIATE (a writer session, see ``services.aggregator.db``), so no
    other writer appends meanwhile. Each statement is a trip to the driver's thread, so
    there are as few as that allows.
    """
    rows = [sqlite_row(e.row) for e in events]
    added = (await connection.exec_driver_sql(_sqlite_insert_sql(), rows)).rowcount
    if added == 0:
        return set()
    if added == len(rows):  # every row was new: the usual case, and no need to ask which
        keys = {e.key for e in events}
    else:
        newest = await connection.exec_driver_sql(
            "SELECT source, event_id FROM event ORDER BY rowid DESC LIMIT ?", (added,)
        )
        keys = {(source, event_id) for source, event_id in tuples(newest)}
    for fold in _fold_statements(KINDS.types):
        await connection.execute(fold, {"added": added, "store_version": version})
    return keys


@cache
def _fold_statements(kinds: tuple[str, ...]) -> list[Any]:
    """SQLite: fold the last ``:added`` rows of the log into the projections (built once
    per set of registered ``kinds``)."""
    appended = sa.text("event.rowid > (SELECT max(rowid) FROM event) - :added").bindparams(
        sa.bindparam("added", type_=sa.Integer)
    )
    return [
        upsert_newest_from(sqlite.insert, p.table, newest_of_each_key(p, EVENT, appended))
        for p in projections(EVENT)
    ]
