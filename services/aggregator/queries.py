"""The read side: the stored state for rating, the audit trail, counts, published statuses.

Core selects unpacked by position: at 10,000 milestones an ORM object, or even a named
attribute lookup per row, costs more than rating the whole programme. Every function takes
keyword arguments only.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.models import EventPublic
from services.aggregator.storage import backend
from services.aggregator.storage.log import (
    CONFLICT,
    DEAD_LETTER,
    EVENT,
    PROPOSAL_STATUS,
    PUBLIC_COLUMNS,
    STORE_REBUILT,
    STORE_VERSION_NOW,
    Condition,
    execute,
    log_rows,
    projections,
    tuples,
)
from shared.health import KpiObservation, MilestoneState, ProgrammeState
from shared.kinds.kpi import KPI_OBSERVATION
from shared.kinds.kpi import TYPE as KPI_TYPE
from shared.kinds.milestone import MILESTONE_STATE
from shared.kinds.milestone import TYPE as MILESTONE_TYPE


def _known(as_at: datetime | None, known_at: datetime | None) -> list[Condition]:
    """The log conditions of a view: events whose time is not after ``as_at`` and that
    were stored (``received_at``) by ``known_at``."""
    conditions: list[Condition] = []
    if as_at is not None:
        conditions.append(lambda log: log.c.event_time <= as_at)
    if known_at is not None:
        conditions.append(lambda log: log.c.received_at <= known_at)
    return conditions


def _projection(kind: str) -> Any:
    return next(p for p in projections(EVENT) if p.kind == kind)


def _milestone_state(row: Any) -> MilestoneState:
    proposal, milestone, status, event_time, _seq, source, event_id, note = row
    return MilestoneState(proposal, milestone, status, event_time, source, event_id, note)


def _kpi_observation(row: Any) -> KpiObservation:
    kpi, period, value, event_time, _seq, source, event_id = row
    return KpiObservation(kpi, period, value, event_time, source, event_id)


async def load_state(
    *,
    session: AsyncSession,
    as_at: datetime | None = None,
    known_at: datetime | None = None,
) -> ProgrammeState:
    """Every milestone state and KPI observation the projections hold; with ``as_at`` or
    ``known_at``, the state the log gives from events whose time is not after ``as_at``
    and that had been stored by ``known_at`` (see :func:`~.storage.log.newest_as_at`)."""
    if as_at is not None or known_at is not None:
        return await _load_state_at(session, _known(as_at, known_at))
    rows = await execute(session, _milestone_rows(session))
    milestones = {(row[0], row[1]): MilestoneState(*row) for row in tuples(rows)}
    rows = await execute(session, _kpi_rows(session))
    observations: dict[str, list[KpiObservation]] = defaultdict(list)
    # In period order as Python sorts, not as the database collates: the order a state kept
    # up to date has too (shared.health.changed_state).
    for kpi, period, value, event_time, source, event_id in sorted(tuples(rows)):
        observations[kpi].append(KpiObservation(kpi, period, value, event_time, source, event_id))
    return ProgrammeState(milestones=milestones, kpi_observations=dict(observations))


async def changed_since(
    *, session: AsyncSession, version: int
) -> tuple[list[MilestoneState], list[KpiObservation]]:
    """The projection rows written by the commits after the store's ``version`` (and any
    committed while this reads): what :func:`load_state` would read differently. Rows
    taken out of a projection are not among them (see :func:`store_rebuilt`)."""
    milestone_rows = _milestone_rows(session).where(MILESTONE_STATE.c.version > version)
    milestones = [MilestoneState(*row) for row in tuples(await execute(session, milestone_rows))]
    kpi_rows = _kpi_rows(session).where(KPI_OBSERVATION.c.version > version)
    return milestones, [KpiObservation(*row) for row in tuples(await execute(session, kpi_rows))]


def _milestone_rows(session: AsyncSession) -> sa.Select[Any]:
    """The milestone projection's rows as :class:`MilestoneState` fields, in their order."""
    m = MILESTONE_STATE.c
    aware = backend(session).aware
    return sa.select(
        m.proposal, m.milestone, m.status, aware(m.event_time), m.source, m.event_id, m.note
    )


def _kpi_rows(session: AsyncSession) -> sa.Select[Any]:
    """The KPI projection's rows as :class:`KpiObservation` fields, in their order."""
    k = KPI_OBSERVATION.c
    aware = backend(session).aware
    return sa.select(k.kpi, k.period, k.value, aware(k.event_time), k.source, k.event_id)


async def store_rebuilt(*, session: AsyncSession) -> int:
    """The last version whose commit may have taken rows out of a projection or changed a
    lock (a review stored, a replay): past it, :func:`changed_since` does not tell all."""
    return (await execute(session, STORE_REBUILT)).scalar_one_or_none() or 0


async def _load_state_at(session: AsyncSession, where: list[Condition]) -> ProgrammeState:
    database = backend(session)
    for setting in database.AS_AT_SETTINGS:
        await execute(session, sa.text(setting))
    newest_as_at = database.newest_as_at
    rows = await execute(session, newest_as_at(_projection(MILESTONE_TYPE), *where))
    milestones = {(row[0], row[1]): _milestone_state(row) for row in tuples(rows)}
    rows = await execute(session, newest_as_at(_projection(KPI_TYPE), *where))
    observations: dict[str, list[KpiObservation]] = defaultdict(list)
    for row in sorted(tuples(rows), key=lambda r: (r[0], r[1])):
        observations[row[0]].append(_kpi_observation(row))
    return ProgrammeState(milestones=milestones, kpi_observations=dict(observations))


async def milestone_log(
    *,
    session: AsyncSession,
    proposals: Iterable[str],
    as_at: datetime | None = None,
    known_at: datetime | None = None,
) -> list[MilestoneState]:
    """Every milestone event of ``proposals`` up to the view, in fold order (event time,
    then stream sequence): one proposal's timeline, not the whole log."""
    where = [c(EVENT) for c in _known(as_at, known_at)]
    query = log_rows(_projection(MILESTONE_TYPE), EVENT.c.proposal.in_(list(proposals)), *where)
    return [_milestone_state(row) for row in tuples(await execute(session, query))]


async def kpi_log(
    *,
    session: AsyncSession,
    kpis: Iterable[str],
    as_at: datetime | None = None,
    known_at: datetime | None = None,
) -> list[KpiObservation]:
    """Every report of ``kpis`` up to the view, in fold order, corrections included."""
    where = [c(EVENT) for c in _known(as_at, known_at)]
    query = log_rows(_projection(KPI_TYPE), EVENT.c.kpi.in_(list(kpis)), *where)
    return [_kpi_observation(row) for row in tuples(await execute(session, query))]


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
    until: datetime | None = None,
    milestone: str | None = None,
    kpi: str | None = None,
    event_id: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[EventPublic], str | None]:
    """The audit trail in stream order, filtered; ``since`` and ``until`` (both inclusive)
    compare the events' own time.

    Returns one page and the cursor of the next page (None after the last).
    """
    order = (EVENT.c.stream_seq, EVENT.c.source, EVENT.c.event_id)
    query = sa.select(*PUBLIC_COLUMNS).order_by(*order).limit(limit + 1)
    for column, value in (
        (EVENT.c.proposal, proposal),
        (EVENT.c.source, source),
        (EVENT.c.type, type),
        (EVENT.c.milestone, milestone),
        (EVENT.c.kpi, kpi),
        (EVENT.c.event_id, event_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(EVENT.c.event_time >= since)
    if until is not None:
        query = query.where(EVENT.c.event_time <= until)
    if cursor is not None:
        query = query.where(sa.tuple_(*order) > sa.tuple_(*decode_cursor(cursor)))
    rows = (await execute(session, query)).mappings().all()
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
        name: (await execute(session, sa.select(sa.func.count()).select_from(table))).scalar_one()
        for name, table in tables.items()
    }


async def proposal_statuses(*, session: AsyncSession) -> dict[str, tuple[str | None, bool | None]]:
    """The (rag, stalled) last published for each proposal."""
    rows = await execute(
        session,
        sa.select(PROPOSAL_STATUS.c.proposal, PROPOSAL_STATUS.c.rag, PROPOSAL_STATUS.c.stalled),
    )
    return {row.proposal: (row.rag, row.stalled) for row in rows}


async def store_version(*, session: AsyncSession) -> int:
    """The store's version, which every commit that changes what the board reads moves on
    (``store_version``): one primary-key lookup; 0 before the first such commit."""
    return (await execute(session, STORE_VERSION_NOW)).scalar_one_or_none() or 0
