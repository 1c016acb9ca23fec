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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

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
    execute,
    tuples,
)
from shared.health import KpiObservation, MilestoneState, ProgrammeState
from shared.kinds.kpi import KPI_OBSERVATION
from shared.kinds.milestone import MILESTONE_STATE


async def load_state(*, session: AsyncSession) -> ProgrammeState:
    """Every milestone state and KPI observation the projections hold."""
    m = MILESTONE_STATE.c
    rows = await execute(
        session,
        sa.select(
            m.proposal, m.milestone, m.status, backend(session).aware(m.event_time), m.source,
            m.event_id, m.note,
        ),
    )  # fmt: skip
    milestones = {(row[0], row[1]): MilestoneState(*row) for row in tuples(rows)}
    k = KPI_OBSERVATION.c
    rows = await execute(
        session,
        sa.select(
            k.kpi, k.period, k.value, backend(session).aware(k.event_time), k.source
        ).order_by(k.kpi, k.period),
    )
    observations: dict[str, list[KpiObservation]] = defaultdict(list)
    for kpi, period, value, event_time, source in tuples(rows):
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
