"""Repository functions: store a batch of events, read the state, the audit trail, the status.

Writes are set-wise core statements, never an ORM object per event: one insert-or-ignore
for the batch's events, then one upsert per projection that folds exactly the events the
insert added, newest per key by (event time, stream sequence), and whose WHERE keeps a
stored row that is newer, so a late backfill, a redelivery or a second replica never
overwrites a newer status. The projections are computed by the database from the stored
rows, as ``replay`` computes them, never row by row in Python. The caller owns the
transaction: it commits, then acknowledges the messages.

On PostgreSQL a batch travels as one array parameter per column, unnested by the server
(``INSERT ... SELECT ... FROM unnest($1::varchar[], ...)``), and the projection upserts
ride in the same statement as data-modifying CTEs: one round trip per batch, as the bare
loop of ``bench`` does. SQLite has no arrays: the rows go as the driver's ``executemany``
of plain tuples, which it runs in C.

Every function takes keyword arguments only and leaves committing to the caller.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.models import (
    DeadLetter,
    Event,
    EventBase,
    EventConflict,
    EventPublic,
    KpiObservationRow,
    MilestoneStateRow,
    ProposalStatus,
    UtcDateTime,
)
from shared.events import KPI_TYPE, MILESTONE_TYPE
from shared.health import KpiObservation, MilestoneState, ProgrammeState


def _table(model: type[SQLModel]) -> sa.Table:
    """The core table of a SQLModel table class (statements here are core, not ORM)."""
    return model.__table__  # type: ignore[attr-defined]


EVENT = _table(Event)
CONFLICT = _table(EventConflict)
DEAD_LETTER = _table(DeadLetter)
MILESTONE_STATE = _table(MilestoneStateRow)
KPI_OBSERVATION = _table(KpiObservationRow)
PROPOSAL_STATUS = _table(ProposalStatus)

PUBLIC_COLUMNS = [*(EVENT.c[name] for name in EventBase.model_fields), EVENT.c.event_id.label("id")]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A decoded event ready to store: its ``event`` row (projections are folded from it)."""

    row: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.row["source"], self.row["event_id"])


@dataclass
class BatchOutcome:
    """What one stored batch changed."""

    persisted: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    conflicts: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def merge(self, other: BatchOutcome) -> None:
        self.persisted += other.persisted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.dead_letters += other.dead_letters


def _insert(session: AsyncSession, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which has ON CONFLICT (PostgreSQL and SQLite spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def _core(
    session: AsyncSession,
    statement: sa.Executable,
    rows: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
) -> sa.CursorResult[Any]:
    """Run a core statement (``rows``: many parameter sets) in the session's transaction."""
    connection = await session.connection()
    return await connection.execute(statement, rows)


def _tuples(result: sa.CursorResult[Any]) -> list[tuple[Any, ...]]:
    """Every row of ``result``, for unpacking by position (rows are tuples)."""
    return cast(list[tuple[Any, ...]], result.all())


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def store_batch(
    *,
    session: AsyncSession,
    events: Sequence[NewEvent],
    dead_letters: Sequence[dict[str, Any]] = (),
    recorded_at: datetime,
) -> BatchOutcome:
    """Store a batch: events once each, conflicts and dead letters aside, projections moved."""
    outcome = BatchOutcome()
    if dead_letters:
        outcome.dead_letters = await _insert_dead_letters(session, dead_letters)
    if not events:
        return outcome
    first = _first_of_each_key(events)
    postgres = _is_postgres(session)
    if postgres:
        inserted = await _insert_and_project(session, first.values())
    else:
        inserted = await _insert_and_project_sqlite(session, first.values())
    outcome.persisted = Counter(first[key].row["type"] for key in inserted)
    repeats = [e for e in events if e.key not in inserted or first[e.key] is not e]
    if repeats:
        outcome.duplicates, outcome.conflicts = await _record_repeats(session, repeats, recorded_at)
    return outcome


def _first_of_each_key(events: Iterable[NewEvent]) -> dict[tuple[str, str], NewEvent]:
    first: dict[tuple[str, str], NewEvent] = {}
    for e in events:
        first.setdefault(e.key, e)
    return first


EVENT_ROW = [c.name for c in EVENT.columns]


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


async def _insert_and_project_sqlite(
    session: AsyncSession, events: Iterable[NewEvent]
) -> set[tuple[str, str]]:
    """SQLite: insert-or-ignore as the driver's ``executemany`` of plain tuples, then fold
    the rows it inserted into the projections as PostgreSQL's statement does.

    Building SQLAlchemy parameters row by row cost more than SQLite's whole insert, and
    ``executemany`` returns no rows, only how many it inserted. Those are the rows with the
    highest rowids: SQLite gives each new row the largest rowid plus one, and the caller's
    transaction began IMMEDIATE (a writer session, see ``services.aggregator.db``), so no
    other writer appends meanwhile. Each statement is a trip to the driver's thread, so
    there are as few as that allows.
    """
    connection = await session.connection()
    events = list(events)
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
        keys = {(source, event_id) for source, event_id in _tuples(newest)}
    for fold in _sqlite_fold_statements():
        await connection.execute(fold, {"added": added})
    return keys


@cache
def _sqlite_fold_statements() -> list[postgresql.Insert | sqlite.Insert]:
    """SQLite: fold the last ``:added`` rows of the log into the projections."""
    appended = sa.text("event.rowid > (SELECT max(rowid) FROM event) - :added").bindparams(
        sa.bindparam("added", type_=sa.Integer)
    )
    return [
        _upsert_newest_from(sqlite.insert, p.table, newest_of_each_key(p, EVENT, appended))
        for p in projections(EVENT)
    ]


class Projection(NamedTuple):
    """A projection of the log: its table, and its key, event type and columns in a log."""

    table: sa.Table
    key: tuple[sa.ColumnElement[Any], ...]
    kind: str
    columns: list[sa.ColumnElement[Any]]


def projections(log: sa.Table | sa.CTE) -> tuple[Projection, Projection]:
    """The milestone and KPI projections of ``log`` (the ``event`` table, or rows like it)."""
    c = log.c
    period = c.data["period"].as_string().label("period")
    milestones = Projection(
        MILESTONE_STATE,
        (c.proposal, c.milestone),
        MILESTONE_TYPE,
        [c.proposal, c.milestone, c.data["status"].as_string().label("status"),
         c.event_time, c.stream_seq, c.source, c.event_id,
         c.data["note"].as_string().label("note")],
    )  # fmt: skip
    kpis = Projection(
        KPI_OBSERVATION,
        (c.kpi, period),
        KPI_TYPE,
        [c.kpi, period, c.data["value"].as_float().label("value"),
         c.event_time, c.stream_seq, c.source, c.event_id],
    )  # fmt: skip
    return milestones, kpis


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


@cache
def _insert_and_project_statement() -> sa.Select[tuple[str, str]]:
    """PostgreSQL: the whole batch in one statement, built once.

    The rows come as one array per column; the insert-or-ignore returns what it inserted,
    and two data-modifying CTEs fold exactly those events into the projections, newest by
    (event time, stream sequence) per key, as ``replay`` folds the log. One round trip,
    and no projection rows built in Python.
    """
    arrays = [sa.bindparam(n, type_=postgresql.ARRAY(EVENT.c[n].type)) for n in EVENT_ROW]
    batch = sa.func.unnest(*arrays).table_valued(*EVENT_ROW).render_derived()
    inserted = (
        postgresql.insert(EVENT)
        .from_select(EVENT_ROW, sa.select(*batch.c))
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(
            *(EVENT.c[n] for n in ("source", "event_id", "type", "proposal", "milestone", "kpi")),
            *(EVENT.c[n] for n in ("event_time", "stream_seq", "data")),
        )
        .cte("inserted")
    )
    i = inserted.c
    newest = (i.event_time.desc(), i.stream_seq.desc())
    folds = [
        _upsert_newest_from(
            postgresql.insert,
            table,
            sa.select(*columns)
            .where(i.type == kind)
            .ext(postgresql.distinct_on(*key))
            .order_by(*key, *newest),
        ).cte(f"{table.name}_folded")
        for table, key, kind, columns in projections(inserted)
    ]
    return sa.select(i.source, i.event_id).add_cte(*folds)


def _upsert_newest_from(
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


async def _insert_and_project(
    session: AsyncSession, events: Iterable[NewEvent]
) -> set[tuple[str, str]]:
    # Sorted keys give concurrent replicas one lock order, so they wait rather than deadlock.
    rows = [e.row for e in sorted(events, key=lambda e: e.key)]
    parameters = {name: [row[name] for row in rows] for name in EVENT_ROW}
    result = await _core(session, _insert_and_project_statement(), parameters)
    return {(source, event_id) for source, event_id in _tuples(result)}


async def _record_repeats(
    session: AsyncSession, repeats: Sequence[NewEvent], recorded_at: datetime
) -> tuple[int, int]:
    """Split events already stored into duplicates and conflicts; record new conflicts."""
    keys = sorted({e.key for e in repeats})
    stored = {
        (row.source, row.event_id): row
        for row in await _core(
            session,
            sa.select(EVENT.c.source, EVENT.c.event_id, EVENT.c.digest, EVENT.c.stream_seq).where(
                sa.tuple_(EVENT.c.source, EVENT.c.event_id).in_(keys)
            ),
        )
    }
    conflicts = [
        _conflict_row(e, stored[e.key].stream_seq, recorded_at)
        for e in repeats
        if stored[e.key].digest != e.row["digest"]
    ]
    recorded = 0
    if conflicts:
        stmt = (
            _insert(session, CONFLICT)
            .on_conflict_do_nothing(index_elements=["source", "event_id", "digest"])
            .returning(CONFLICT.c.id)
        )
        recorded = len((await _core(session, stmt, conflicts)).all())
    return len(repeats) - len(conflicts), recorded


def _conflict_row(event: NewEvent, first_stream_seq: int, recorded_at: datetime) -> dict[str, Any]:
    row = event.row
    return {
        "source": row["source"],
        "event_id": row["event_id"],
        "digest": row["digest"],
        "stream_seq": row["stream_seq"],
        "first_stream_seq": first_stream_seq,
        "type": row["type"],
        "event_time": row["event_time"],
        "data": row["data"],
        "received_at": row["received_at"],
        "recorded_at": recorded_at,
    }


async def _insert_dead_letters(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> Counter[str]:
    stmt = (
        _insert(session, DEAD_LETTER)
        .on_conflict_do_nothing(index_elements=["stream_seq", "digest"])
        .returning(DEAD_LETTER.c.reason)
    )
    return Counter(reason for (reason,) in await _core(session, stmt, rows))


def _aware(session: AsyncSession, column: sa.Column[datetime]) -> sa.ColumnElement[datetime]:
    """``column`` as read in bulk: PostgreSQL's driver already returns aware UTC datetimes,
    so the per-value conversion of :class:`~services.aggregator.models.UtcDateTime` (needed
    for SQLite's zoneless text) is skipped there."""
    if _is_postgres(session):
        return sa.type_coerce(column, sa.DateTime(timezone=True)).label(column.name)
    return column


async def load_state(*, session: AsyncSession) -> ProgrammeState:
    """Every milestone state and KPI observation the projections hold.

    Core selects unpacked by position: at 10,000 milestones an ORM object, or even a named
    attribute lookup per row, costs more than rating the whole programme.
    """
    m = MILESTONE_STATE.c
    rows = await _core(
        session,
        sa.select(
            m.proposal, m.milestone, m.status, _aware(session, m.event_time), m.source,
            m.event_id, m.note,
        ),
    )  # fmt: skip
    milestones = {(row[0], row[1]): MilestoneState(*row) for row in _tuples(rows)}
    k = KPI_OBSERVATION.c
    rows = await _core(
        session,
        sa.select(k.kpi, k.period, k.value, _aware(session, k.event_time), k.source).order_by(
            k.kpi, k.period
        ),
    )
    observations: dict[str, list[KpiObservation]] = defaultdict(list)
    for kpi, period, value, event_time, source in _tuples(rows):
        observations[kpi].append(KpiObservation(kpi, period, value, event_time, source))
    return ProgrammeState(milestones=milestones, kpi_observations=dict(observations))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one read of the whole programme.

    Loading, rating and rendering a large programme allocates some 10^5 objects that live
    until the answer is written; collections triggered meanwhile scan them over and over
    (and a full one every long-lived object of the process), which doubled the read API's
    p99. They form no cycles: reference counting frees them before the block ends, so the
    collector has nothing left to do when it resumes. Other tasks that run meanwhile only
    have their cyclic garbage collected a little later.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def encode_cursor(event: EventPublic) -> str:
    """An opaque cursor after ``event`` in the audit trail's order."""
    position = [event.stream_seq, event.source, event.id]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, str]:
    """The position a cursor stands for; ValueError if this module did not issue it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq, source, event_id = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise ValueError("the cursor is not one this API issued") from None
    if not (isinstance(seq, int) and isinstance(source, str) and isinstance(event_id, str)):
        raise ValueError("the cursor is not one this API issued")
    return seq, source, event_id


async def list_events(
    *,
    session: AsyncSession,
    proposal: str | None = None,
    source: str | None = None,
    type: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[EventPublic], str | None]:
    """The audit trail in stream order, filtered; ``since`` compares the events' own time.

    Returns one page and the cursor of the next page (None after the last).
    """
    order = (EVENT.c.stream_seq, EVENT.c.source, EVENT.c.event_id)
    query = sa.select(*PUBLIC_COLUMNS).order_by(*order).limit(limit + 1)
    for column, value in (
        (EVENT.c.proposal, proposal),
        (EVENT.c.source, source),
        (EVENT.c.type, type),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(EVENT.c.event_time >= since)
    if cursor is not None:
        query = query.where(sa.tuple_(*order) > sa.tuple_(*decode_cursor(cursor)))
    rows = (await _core(session, query)).mappings().all()
    page = [EventPublic(**row) for row in rows[:limit]]
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
    return page, next_cursor


async def counts(*, session: AsyncSession) -> dict[str, int]:
    """How many rows each table holds (for the CLI and the tests)."""
    tables = {
        "events": EVENT,
        "milestone_states": MILESTONE_STATE,
        "kpi_observations": KPI_OBSERVATION,
        "conflicts": CONFLICT,
        "dead_letters": DEAD_LETTER,
    }
    return {
        name: (await _core(session, sa.select(sa.func.count()).select_from(table))).scalar_one()
        for name, table in tables.items()
    }


async def proposal_statuses(*, session: AsyncSession) -> dict[str, tuple[str | None, bool | None]]:
    """The (rag, stalled) last published for each proposal."""
    rows = await _core(
        session,
        sa.select(PROPOSAL_STATUS.c.proposal, PROPOSAL_STATUS.c.rag, PROPOSAL_STATUS.c.stalled),
    )
    return {row.proposal: (row.rag, row.stalled) for row in rows}


async def record_status_change(
    *,
    session: AsyncSession,
    proposal: str,
    column: str,
    rag: str,
    stalled: bool,
    reasons: list[dict[str, Any]],
    changed_at: datetime,
) -> int | None:
    """Make (rag, stalled) the proposal's status if it differs; the new version, else None.

    The row decides between replicas: only the transaction whose UPDATE matched publishes.
    """
    await _core(
        session,
        _insert(session, PROPOSAL_STATUS)
        .values(proposal=proposal, column=column, reasons=[], changed_at=changed_at, version=0)
        .on_conflict_do_nothing(index_elements=["proposal"]),
    )
    table = PROPOSAL_STATUS
    result = await _core(
        session,
        sa.update(table)
        .where(
            table.c.proposal == proposal,
            sa.or_(table.c.rag.is_distinct_from(rag), table.c.stalled.is_distinct_from(stalled)),
        )
        .values(
            column=column,
            rag=rag,
            stalled=stalled,
            reasons=reasons,
            changed_at=changed_at,
            version=table.c.version + 1,
        )
        .returning(table.c.version),
    )
    return result.scalar_one_or_none()
