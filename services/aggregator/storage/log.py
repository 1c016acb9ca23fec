"""The event log and its projections, as both databases store them.

``event`` is the record; each kind that folds into stored state has a projection of it
(see :mod:`shared.kinds`): per key, the newest event by (event time, stream sequence). The
statements here are shared by the two backends (:mod:`.sqlite`, :mod:`.postgres`), the
write side (:mod:`services.aggregator.store`), the read side
(:mod:`services.aggregator.queries`) and ``replay``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.models import (
    DeadLetter,
    Event,
    EventBase,
    EventConflict,
    ProposalStatus,
)
from shared.kinds import KINDS, Projection
from shared.kinds.base import Log
from shared.tables import table_of

EVENT = table_of(Event)
CONFLICT = table_of(EventConflict)
DEAD_LETTER = table_of(DeadLetter)
PROPOSAL_STATUS = table_of(ProposalStatus)

NO_REFS: dict[str, None] = {c: None for c in ("milestone", "kpi")}
"""The ``event`` table's reference columns, empty until the event's kind fills its own."""

PUBLIC_COLUMNS = [*(EVENT.c[name] for name in EventBase.model_fields), EVENT.c.event_id.label("id")]


EVENT_ROW = [c.name for c in EVENT.columns]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A decoded event ready to store: its ``event`` row (projections are folded from it)."""

    row: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.row["source"], self.row["event_id"])


async def execute(
    session: AsyncSession,
    statement: sa.Executable,
    rows: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
) -> sa.CursorResult[Any]:
    """Run a core statement (``rows``: many parameter sets) in the session's transaction."""
    connection = await session.connection()
    return await connection.execute(statement, rows)


def tuples(result: sa.CursorResult[Any]) -> list[tuple[Any, ...]]:
    """Every row of ``result``, for unpacking by position (rows are tuples)."""
    return cast(list[tuple[Any, ...]], result.all())


def projections(log: Log) -> list[Projection]:
    """The projections of ``log`` (the ``event`` table, or rows like it), one per kind that
    folds into stored state."""
    return [p for kind in KINDS if (p := kind.projection(log)) is not None]


def newest_of_each_key(
    projection: Projection, rows: sa.FromClause, *where: sa.ColumnElement[bool] | sa.TextClause
) -> sa.Select[Any]:
    """The projection row of the newest event (by event time, then stream sequence) of each
    key among the ``event`` rows of ``rows`` that match ``where``."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=projection.key,
            order_by=(EVENT.c.event_time.desc(), EVENT.c.stream_seq.desc()),
        )
        .label("rank")
    )
    ranked = (
        sa.select(*projection.columns, rank)
        .select_from(rows)
        .where(EVENT.c.type == projection.kind, *where)
        .subquery()
    )
    return sa.select(*(ranked.c[c.name] for c in projection.table.columns)).where(
        ranked.c.rank == 1
    )


def upsert_newest_from(
    insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert],
    table: sa.Table,
    rows: sa.Select[Any],
) -> postgresql.Insert | sqlite.Insert:
    """Insert ``rows`` into a projection, replacing a stored row only with a newer one."""
    stmt = insert(table).from_select([c.name for c in table.columns], rows)
    key = [c.name for c in table.primary_key.columns]
    newer = sa.tuple_(stmt.excluded.event_time, stmt.excluded.stream_seq) > sa.tuple_(
        table.c.event_time, table.c.stream_seq
    )
    return stmt.on_conflict_do_update(
        index_elements=key,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key},
        where=newer,
    )
