"""The event log and its projections, as both databases store them.

``event`` is the record; each kind that folds into stored state has a projection of it
(see :mod:`shared.kinds`): per key, the newest event by (event time, stream sequence). The
statements here are shared by the two backends (:mod:`.sqlite`, :mod:`.postgres`), the
write side (:mod:`services.aggregator.store`), the read side
(:mod:`services.aggregator.queries`) and ``replay``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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
    StoreVersion,
)
from shared.kinds import KINDS, Projection
from shared.kinds.base import Log
from shared.kinds.review import TYPE as REVIEW
from shared.reviews import Review
from shared.tables import table_of

EVENT = table_of(Event)
CONFLICT = table_of(EventConflict)
DEAD_LETTER = table_of(DeadLetter)
PROPOSAL_STATUS = table_of(ProposalStatus)
STORE_VERSION = table_of(StoreVersion)

NO_REFS: dict[str, None] = {c: None for c in ("milestone", "kpi", "period", "target", "held")}
"""The ``event`` table's reference columns, empty until the event's kind fills its own."""

PUBLIC_COLUMNS = [
    *(EVENT.c[name] for name in EventBase.model_fields),
    EVENT.c.event_id.label("id"),
    EVENT.c.held.is_not(None).label("kept_aside"),
]


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


def take_version(insert: Callable[[sa.Table], Any]) -> sa.Executable:
    """The store's version, its row locked until the writer's transaction ends (``insert``:
    the dialect's, which has ON CONFLICT): the writer's new version is the next one. The
    row is made if missing, as in a database whose tables were made from the models rather
    than by the migrations.

    Taken first, before anything is folded, so the rows a commit writes carry its version:
    on PostgreSQL this makes writers one at a time for their whole transaction (they were
    already, under :func:`~.postgres.serialize_returns`, whenever a batch names a return),
    and versions are committed in their order, which is what makes "the rows whose version
    is past v" every row changed since v."""
    stmt = insert(STORE_VERSION).values(id=1, version=0, rebuilt=0)
    return cast(
        sa.Executable,
        stmt.on_conflict_do_update(
            index_elements=["id"], set_={"version": STORE_VERSION.c.version}
        ).returning(STORE_VERSION.c.version),
    )


def set_version(version: int, *, rebuilt: bool = False) -> sa.Executable:
    """Move the store's version (its row taken by :func:`take_version`) to ``version``;
    ``rebuilt``: the commit may take rows out of a projection or change a lock, which rows'
    versions do not tell (``StoreVersion.rebuilt``)."""
    values: dict[str, Any] = {"version": version}
    if rebuilt:
        values["rebuilt"] = version
    return sa.update(STORE_VERSION).where(STORE_VERSION.c.id == 1).values(**values)


STAMP = sa.cast(sa.bindparam("store_version", type_=sa.BigInteger), sa.BigInteger).label("version")
"""The ``version`` of a projection row a fold writes: the writer's new store version (the
statement's ``store_version`` parameter)."""


STORE_VERSION_NOW = sa.select(STORE_VERSION.c.version).where(STORE_VERSION.c.id == 1)
"""The store's version: one primary-key lookup (no row, as before any write, reads as 0)."""
STORE_REBUILT = sa.select(STORE_VERSION.c.rebuilt).where(STORE_VERSION.c.id == 1)
"""The last version that took rows out of a projection or changed a lock."""


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
    key among the ``event`` rows of ``rows`` that match ``where`` (events kept aside by a
    lock, ``held``, are never folded)."""
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
        .where(EVENT.c.type == projection.kind, EVENT.c.held.is_(None), *where)
        .subquery()
    )
    return sa.select(*stamped(ranked.c[c.name] for c in projection.columns)).where(
        ranked.c.rank == 1
    )


def stamped(columns: Iterable[sa.ColumnElement[Any]]) -> list[sa.ColumnElement[Any]]:
    """A projection's columns and its row's ``version`` (:data:`STAMP`), as its table has
    them."""
    return [*columns, STAMP]


def upsert_newest_from(
    insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert],
    table: sa.Table,
    rows: sa.Select[Any],
) -> postgresql.Insert | sqlite.Insert:
    """Insert ``rows`` (:func:`stamped`) into a projection, replacing a stored row only with
    a newer one."""
    names = [c.name for c in rows.selected_columns]
    assert names == [c.name for c in table.columns], names  # the order of the table
    stmt = insert(table).from_select(names, rows)
    key = [c.name for c in table.primary_key.columns]
    newer = sa.tuple_(stmt.excluded.event_time, stmt.excluded.stream_seq) > sa.tuple_(
        table.c.event_time, table.c.stream_seq
    )
    return stmt.on_conflict_do_update(
        index_elements=key,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key},
        where=newer,
    )


Condition = Callable[[Log], sa.ColumnElement[bool]]
"""A condition on rows shaped like ``event``, made for whichever alias of it is read."""


def _newest_up_to(
    projection: Projection, where: Sequence[Condition], *, sequence_only: bool = False
) -> sa.Select[Any]:
    """For the projection row correlated from outside: its key's newest ``event`` row among
    those that match ``where`` (its projection columns, or only its stream sequence; one
    index probe, newest first)."""
    table = projection.table
    # An alias reads like the table (the kinds' projections only read its columns).
    inner = cast(Log, EVENT.alias("earlier"))
    (mine,) = [p for p in projections(inner) if p.table is table]
    keys = table.primary_key.columns
    return (
        sa.select(*([inner.c.stream_seq] if sequence_only else mine.columns))
        .where(
            inner.c.type == projection.kind,
            inner.c.held.is_(None),
            *(e == table.c[c.name] for e, c in zip(mine.key, keys, strict=True)),
            *(condition(inner) for condition in where),
        )
        .order_by(inner.c.event_time.desc(), inner.c.stream_seq.desc())
        .limit(1)
        .correlate(table)
    )


def newest_as_at(projection: Projection, *where: Condition) -> sa.Select[Any]:
    """The projection's rows as they stood among the ``event`` rows that match ``where``
    (an instant by event time, one by arrival): per key, the newest such event.

    Per key the projection holds (every key ever reported is there), one probe of
    ``ix_event_milestone_time`` or ``ix_event_kpi_time`` for the stream sequence of that
    event, then its row by ``ix_event_stream_seq``, rather than a window over the whole log:
    the cost follows the number of keys, not the length of the log, and only one row per
    key leaves the database. The sequences are an ``IN`` list, which SQLite computes first
    (as a join, without statistics, it scanned the log and probed the keys). A stream
    sequence is one message's, so it names one event. (PostgreSQL reads the row in the
    same probe: see :func:`services.aggregator.storage.postgres.newest_as_at`.)
    """
    newest = _newest_up_to(projection, where, sequence_only=True).scalar_subquery()
    return sa.select(*projection.columns).where(
        EVENT.c.type == projection.kind,
        EVENT.c.stream_seq.in_(sa.select(newest).select_from(projection.table)),
    )


def newest_as_at_lateral(projection: Projection, *where: Condition) -> sa.Select[Any]:
    """:func:`newest_as_at` as a lateral join: each key's newest row read in its one
    index probe (for databases that have LATERAL)."""
    newest = _newest_up_to(projection, where).lateral("newest")
    return sa.select(*newest.c).select_from(projection.table.join(newest, sa.true()))


def log_rows(projection: Projection, *where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The projection columns of every ``event`` row of its kind that matches ``where``, in
    the order the projection folds them (event time, then stream sequence)."""
    return (
        sa.select(*projection.columns)
        .where(EVENT.c.type == projection.kind, EVENT.c.held.is_(None), *where)
        .order_by(EVENT.c.event_time, EVENT.c.stream_seq)
    )


REVIEW_COLUMNS = [
    EVENT.c.target, EVENT.c.data, EVENT.c.stream_seq, EVENT.c.source, EVENT.c.event_id,
    EVENT.c.event_time,
]  # fmt: skip


def reviews_of(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The stored reviews that match ``where``, in stream order."""
    return (
        sa.select(*REVIEW_COLUMNS)
        .where(EVENT.c.type == REVIEW, *where)
        .order_by(EVENT.c.stream_seq)
    )


def review_of_row(row: Any) -> Review:
    """A :class:`~shared.reviews.Review` from a row of :func:`reviews_of`."""
    return Review(
        target=row.target,
        action=row.data["action"],
        stream_seq=row.stream_seq,
        source=row.source,
        event_id=row.event_id,
        event_time=row.event_time,
        reason=row.data.get("reason"),
    )


def review_of_event_row(row: dict[str, Any]) -> Review:
    """A :class:`~shared.reviews.Review` from a new ``event`` row."""
    return Review(
        target=row["target"],
        action=row["data"]["action"],
        stream_seq=row["stream_seq"],
        source=row["source"],
        event_id=row["event_id"],
        event_time=row["event_time"],
        reason=row["data"].get("reason"),
    )


async def refold(session: AsyncSession, rows: sa.ColumnElement[bool], *, version: int) -> None:
    """Fold again, from the log, every projection key that the ``event`` rows matching
    ``rows`` fold into: what a change of which events are held changes (rows written carry
    ``version``; a key left with no applied event leaves the projection)."""
    for projection in projections(EVENT):
        table = projection.table
        keys = tuples(
            await execute(
                session,
                sa.select(*projection.key).where(EVENT.c.type == projection.kind, rows).distinct(),
            )
        )
        pk = list(table.primary_key.columns)
        for values in keys:
            await execute(
                session,
                sa.delete(table).where(*(c == v for c, v in zip(pk, values, strict=True))),
            )
            newest = newest_of_each_key(
                projection,
                EVENT,
                *(e == v for e, v in zip(projection.key, values, strict=True)),
            )
            await execute(
                session,
                sa.insert(table).from_select([c.name for c in table.columns], newest),
                {"store_version": version},
            )
