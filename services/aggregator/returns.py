"""The office's side of the store: the returns received, their reviews, what locks kept aside.

Read with Core selects like :mod:`.queries`. A KPI return is one reporter's events of one
KPI for one period (a target ``kpi.<kpi>.<period>.<reporter>``), a completion is a
milestone whose newest state is ``completed`` (``milestone.<proposal>.<milestone>``); where
each stands is :func:`shared.reviews.review_state` of its newest applied event against its
reviews in stream order. Events a lock kept aside (``held``) are never a return.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.storage.log import (
    EVENT,
    execute,
    review_of_row,
    reviews_of,
    tuples,
)
from shared.catalogue import Catalogue
from shared.health import MilestoneState, ProgrammeState, Touched
from shared.kinds.kpi import TYPE as KPI_TYPE
from shared.kinds.milestone import MILESTONE_STATE
from shared.kinds.milestone import TYPE as MILESTONE_TYPE
from shared.kinds.update import TYPE as UPDATE_TYPE
from shared.reporting import ReturnKey, update_period
from shared.reviews import (
    Review,
    ReviewState,
    kpi_target,
    lock_of,
    milestone_target,
    parse_target,
    review_state,
)

ReturnKind = Literal["kpi", "milestone"]


def _aware_min(column: sa.ColumnElement[datetime]) -> sa.ColumnElement[datetime]:
    # min() of a timestamp is text on SQLite: coerce it back through the column's own type.
    return sa.type_coerce(sa.func.min(column), EVENT.c.received_at.type)


async def received_returns(
    *,
    session: AsyncSession,
    catalogue: Catalogue,
    authority: str | None = None,
    received_by: datetime | None = None,
) -> dict[ReturnKey, datetime]:
    """When the first return of each (kind, ref, authority, period) was stored (of
    ``authority``'s only, and stored by ``received_by``, if given): KPI returns by their
    period, progress updates (milestone and update events) by the update period their own
    period lies in."""
    e = EVENT.c
    applied = sa.and_(
        e.held.is_(None),
        *([e.source == authority] if authority else []),
        *([e.received_at <= received_by] if received_by else []),
    )
    kpi_rows = await execute(
        session,
        sa.select(e.kpi, e.source, e.period, _aware_min(e.received_at))
        .where(e.type == KPI_TYPE, applied)
        .group_by(e.kpi, e.source, e.period),
    )
    received: dict[ReturnKey, datetime] = {
        ("kpi", kpi, source, period): at for kpi, source, period, at in tuples(kpi_rows)
    }
    progress = await execute(
        session,
        sa.select(e.proposal, e.source, e.period, _aware_min(e.received_at))
        .where(e.type.in_((MILESTONE_TYPE, UPDATE_TYPE)), applied, e.period.is_not(None))
        .group_by(e.proposal, e.source, e.period),
    )
    for proposal, source, period, at in tuples(progress):
        if proposal not in catalogue.proposal_by_id:
            continue
        owed = update_period(catalogue, proposal, period)
        if owed is None:
            continue
        key: ReturnKey = ("update", proposal, source, owed)
        if key not in received or at < received[key]:
            received[key] = at
    return received


@dataclass(frozen=True, slots=True)
class Return:
    """A return the office may review, as it stands."""

    kind: ReturnKind
    target: str
    column: str
    proposal: str
    """The proposal a completion is of; a KPI return's: the first its KPI evidences."""
    reporter: str
    source: str
    event_id: str
    stream_seq: int
    """Of its newest applied event: the version a review is of."""
    received_at: datetime
    state: ReviewState
    review: Review | None
    """The review that set ``state`` (None: submitted, never reviewed)."""
    kpi: str | None = None
    period: str | None = None
    milestone: str | None = None
    value: float | None = None


async def all_reviews(
    *, session: AsyncSession, where: Iterable[sa.ColumnElement[bool]] = ()
) -> dict[str, list[Review]]:
    """Each target's stored reviews, in stream order."""
    reviews: dict[str, list[Review]] = defaultdict(list)
    for row in await execute(session, reviews_of(*where)):
        reviews[row.target].append(review_of_row(row))
    return dict(reviews)


def column_of_return(catalogue: Catalogue, kind: str, ref: str) -> str:
    """The column of an obligation's returns: a KPI's home, or a proposal's column."""
    if kind == "kpi":
        return catalogue.home_of_kpi(ref)[0]
    return catalogue.column_of[ref]


async def kpi_returns(
    *,
    session: AsyncSession,
    catalogue: Catalogue,
    reviews: dict[str, list[Review]],
    where: Iterable[sa.ColumnElement[bool]] = (),
) -> list[Return]:
    """Every KPI return received: its newest applied event and where it stands."""
    e = EVENT.c
    newest = (
        sa.select(e.target, sa.func.max(e.stream_seq).label("seq"))
        .where(e.type == KPI_TYPE, e.held.is_(None), *where)
        .group_by(e.target)
        .subquery()
    )
    rows = await execute(
        session,
        sa.select(
            e.target, e.kpi, e.period, e.source, e.event_id, e.stream_seq, e.received_at,
            e.data["value"].as_float(),
        )
        .join(newest, sa.and_(e.target == newest.c.target, e.stream_seq == newest.c.seq))
        .order_by(e.received_at, e.stream_seq),
    )  # fmt: skip
    # Rated in a thread: at a large programme's scale, seconds the event loop must not wait.
    return await asyncio.to_thread(_kpi_returns, catalogue, reviews, tuples(rows))


def _kpi_returns(
    catalogue: Catalogue, reviews: dict[str, list[Review]], rows: list[tuple[Any, ...]]
) -> list[Return]:
    out = []
    for target, kpi, period, source, event_id, seq, received_at, value in rows:
        if kpi not in catalogue.kpi_by_id:
            continue
        state, review = review_state(seq, reviews.get(target, []))
        assert state is not None  # a return was received
        column, proposal = catalogue.home_of_kpi(kpi)
        out.append(
            Return(
                kind="kpi", target=target, column=column, proposal=proposal, reporter=source,
                source=source, event_id=event_id, stream_seq=seq, received_at=received_at,
                state=state, review=review, kpi=kpi, period=period, value=value,
            )
        )  # fmt: skip
    return out


async def completions(
    *,
    session: AsyncSession,
    catalogue: Catalogue,
    reviews: dict[str, list[Review]],
    only: tuple[str, str] | None = None,
) -> list[Return]:
    """Every milestone whose newest state is ``completed`` (or ``only`` that (proposal,
    milestone)), and where its review stands."""
    m = MILESTONE_STATE.c
    e = EVENT.c
    where = [m.proposal == only[0], m.milestone == only[1]] if only else []
    rows = await execute(
        session,
        sa.select(m.proposal, m.milestone, m.source, m.event_id, m.stream_seq, e.received_at)
        .join(EVENT, sa.and_(e.source == m.source, e.event_id == m.event_id))
        .where(m.status == "completed", *where)
        .order_by(e.received_at, m.stream_seq),
    )
    out = []
    for proposal, milestone, source, event_id, seq, received_at in tuples(rows):
        if proposal not in catalogue.proposal_by_id:
            continue
        target = milestone_target(proposal, milestone)
        state, review = review_state(seq, reviews.get(target, []))
        assert state is not None
        out.append(
            Return(
                kind="milestone", target=target, column=catalogue.column_of[proposal],
                proposal=proposal, reporter=source, source=source, event_id=event_id,
                stream_seq=seq, received_at=received_at, state=state, review=review,
                milestone=milestone,
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class KeptAside:
    """An event accepted before its return's lock reached the column service."""

    source: str
    event_id: str
    type: str
    target: str
    column: str
    proposal: str
    received_at: datetime
    data: dict[str, Any]
    lock: Review | None
    """The approval or verification that holds it."""


async def kept_aside(*, session: AsyncSession, reviews: dict[str, list[Review]]) -> list[KeptAside]:
    """Every event a lock kept aside, oldest first."""
    e = EVENT.c
    rows = await execute(
        session,
        sa.select(
            e.source, e.event_id, e.type, e.target, e.column, e.proposal, e.received_at, e.data,
            e.held,
        )
        .where(e.held.is_not(None))
        .order_by(e.stream_seq),
    )  # fmt: skip
    out = []
    for source, event_id, type_, target, column, proposal, received_at, data, held in tuples(rows):
        lock = next((r for r in reviews.get(target, []) if r.stream_seq == held), None)
        out.append(
            KeptAside(source, event_id, type_, target, column, proposal, received_at, data, lock)
        )
    return out


async def return_of(
    *,
    session: AsyncSession,
    catalogue: Catalogue,
    target: str,
) -> Return | None:
    """One return as it stands, or None when nothing applied was received for it."""
    reviews = await all_reviews(session=session, where=[EVENT.c.target == target])
    parsed = parse_target(target)
    if parsed.kind == "kpi":
        found = await kpi_returns(
            session=session, catalogue=catalogue, reviews=reviews, where=[EVENT.c.target == target]
        )
    else:
        proposal, milestone = parsed.parts
        found = await completions(
            session=session, catalogue=catalogue, reviews=reviews, only=(proposal, milestone)
        )
    return found[0] if found else None


TARGETS_PER_QUERY = 5000
"""Targets named in one ``IN`` (SQLite takes at most 32,766 parameters a statement)."""


def shown_targets(state: ProgrammeState, only: Touched | None = None) -> set[str]:
    """The returns a board of ``state`` shows: each KPI observation's, each completion's
    (``only``: of those milestones and KPIs)."""
    if only is None:
        milestones: Iterable[MilestoneState] = state.milestones.values()
        kpis: Iterable[str] = state.kpi_observations
    else:
        milestones = [s for key in only.milestones if (s := state.milestones.get(key))]
        kpis = only.kpis
    targets = {
        milestone_target(m.proposal, m.milestone) for m in milestones if m.status == "completed"
    }
    for kpi in kpis:
        targets.update(
            kpi_target(o.kpi, o.period, o.source) for o in state.kpi_observations.get(kpi, ())
        )
    return targets


async def locks(
    *,
    session: AsyncSession,
    targets: Iterable[str],
    as_at: datetime | None = None,
    known_at: datetime | None = None,
) -> dict[str, Review]:
    """Which of ``targets`` are locked, each with the approval or verification that locks
    it; for a view, the locks its reviews set (reviews whose time is not after ``as_at``,
    stored by ``known_at``). Reads only those targets' reviews (``ix_event_target``)."""
    where = []
    if as_at is not None:
        where.append(EVENT.c.event_time <= as_at)
    if known_at is not None:
        where.append(EVENT.c.received_at <= known_at)
    wanted = sorted(targets)
    found: dict[str, Review] = {}
    for start in range(0, len(wanted), TARGETS_PER_QUERY):
        chunk = wanted[start : start + TARGETS_PER_QUERY]
        reviews = await all_reviews(session=session, where=[EVENT.c.target.in_(chunk), *where])
        found.update(
            (target, lock) for target, of_target in reviews.items() if (lock := lock_of(of_target))
        )
    return found


@dataclass(frozen=True, slots=True)
class Queue:
    """Every return as it stands and every event kept aside: the review queue, whole."""

    returns: list[Return]
    kept_aside: list[KeptAside]


async def read_queue(
    *,
    session: AsyncSession,
    catalogue: Catalogue,
    kind: ReturnKind | None = None,
) -> Queue:
    """The KPI returns (unless ``kind`` is milestone) and completions (unless kpi) received,
    oldest first, and what locks kept aside; one read of the reviews."""
    reviews = await all_reviews(session=session)
    found: list[Return] = []
    if kind in (None, "kpi"):
        found += await kpi_returns(session=session, catalogue=catalogue, reviews=reviews)
    if kind in (None, "milestone"):
        found += await completions(session=session, catalogue=catalogue, reviews=reviews)
    found.sort(key=lambda r: r.received_at)
    return Queue(found, await kept_aside(session=session, reviews=reviews))
