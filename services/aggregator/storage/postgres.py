"""PostgreSQL: a batch as one array parameter per column, stored and folded in one statement.

The server unnests the arrays (``INSERT ... SELECT ... FROM unnest($1::varchar[], ...)``),
and the projection upserts ride in the same statement as data-modifying CTEs: one round
trip per batch, as the bare loop of ``bench`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import visitors

from services.aggregator.storage.log import (
    EVENT,
    EVENT_ROW,
    NewEvent,
    newest_as_at_lateral,
    projections,
    stamped,
    tuples,
    upsert_newest_from,
)
from shared.kinds import KINDS

NAME = "postgresql"
insert = postgresql.insert
newest_as_at = newest_as_at_lateral
"""PostgreSQL has LATERAL: each key's newest row in one index probe (the correlated
sequence-then-row form evaluated its subplan twice per key)."""
AS_AT_SETTINGS: tuple[str, ...] = ("SET LOCAL enable_bitmapscan = off", "SET LOCAL jit = off")
"""For the as-at read's transaction only. With ``known_at`` the planner misjudged the KPI
probes (the period is inside the JSON document) and chose a bitmap scan of every report
of the KPI per key, then compiled it: 2 s instead of 0.2 s at 100,000 KPI reports."""


RETURNS_LOCK = 0x434F544E  # "COTN"


async def serialize_returns(connection: AsyncConnection) -> None:
    """Hold the returns' lock until the transaction ends: replicas storing batches at once
    decide which events a review holds one after the other, each seeing the other's."""
    await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": RETURNS_LOCK})


def aware(column: sa.Column[datetime]) -> sa.ColumnElement[datetime]:
    """``column`` as read in bulk: the driver already returns aware UTC datetimes, so the
    per-value conversion of :class:`~shared.tables.UtcDateTime` is skipped."""
    return sa.type_coerce(column, sa.DateTime(timezone=True)).label(column.name)


def _folded_columns() -> list[sa.Column[Any]]:
    """The ``event`` columns the insert returns: the key, and what the projections read.

    Every column would also send back what no projection reads (the extensions document,
    the arrival time), for every event of every batch.
    """
    used = {"source", "event_id", "type", "event_time", "stream_seq", "held"}
    for projection in projections(EVENT):
        for expression in (*projection.key, *projection.columns):
            for element in visitors.iterate(expression):
                if isinstance(element, sa.Column) and element.table is EVENT:
                    used.add(element.name)
    return [EVENT.c[name] for name in EVENT_ROW if name in used]


@cache
def _insert_and_project_statement(kinds: tuple[str, ...]) -> sa.Select[tuple[str, str]]:
    """PostgreSQL: the whole batch in one statement, built once per set of registered
    ``kinds``.

    The rows come as one array per column; the insert-or-ignore returns what it inserted,
    and a data-modifying CTE per projection folds exactly those events into it, newest by
    (event time, stream sequence) per key, as ``replay`` folds the log. One round trip,
    and no projection rows built in Python.
    """
    arrays = [sa.bindparam(n, type_=postgresql.ARRAY(EVENT.c[n].type)) for n in EVENT_ROW]
    batch = sa.func.unnest(*arrays).table_valued(*EVENT_ROW).render_derived()
    inserted = (
        postgresql.insert(EVENT)
        .from_select(EVENT_ROW, sa.select(*batch.c))
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(*_folded_columns())
        .cte("inserted")
    )
    i = inserted.c
    newest = (i.event_time.desc(), i.stream_seq.desc())
    folds = [
        upsert_newest_from(
            postgresql.insert,
            table,
            sa.select(*stamped(columns))
            .where(i.type == kind, i.held.is_(None))
            .ext(postgresql.distinct_on(*key))
            .order_by(*key, *newest),
        ).cte(f"{table.name}_folded")
        for table, key, kind, columns in projections(inserted)
    ]
    return sa.select(i.source, i.event_id).add_cte(*folds)


async def insert_and_project(
    connection: AsyncConnection, events: Sequence[NewEvent], *, version: int
) -> set[tuple[str, str]]:
    """Store the batch's new events and fold them (the rows written carry ``version``); the
    keys of those it inserted."""
    # Sorted keys give concurrent replicas one lock order, so they wait rather than deadlock.
    rows = [e.row for e in sorted(events, key=lambda e: e.key)]
    parameters: dict[str, Any] = {name: [row[name] for row in rows] for name in EVENT_ROW}
    parameters["store_version"] = version
    result = await connection.execute(_insert_and_project_statement(KINDS.types), parameters)
    return {(source, event_id) for source, event_id in tuples(result)}
