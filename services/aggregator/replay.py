"""Rebuild the projections from the event log (``cotn replay``).

``milestone_state`` and ``kpi_observation`` are a fold of ``event``: per key, the newest
event by (event time, stream sequence), as the consumer keeps them. Replay recomputes them
set-wise, in one transaction, with a window function over the log, so it ends in the state
live consumption reached. Only ids the given catalogue knows are folded, as the consumer
would with that catalogue: its milestones go into a temporary table the log is joined with
(a list of 10,000 ids in the statement itself would not even parse on PostgreSQL).

It is safe while an aggregator runs: on PostgreSQL the projections are locked against
writers for the transaction (readers go on), so a batch committed meanwhile is either in
the log replay reads or applied after it by the same newest-wins upsert; on SQLite the
transaction holds the database's write lock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.aggregator.db import WRITER_OPTIONS, make_engine
from services.aggregator.models import Id
from services.aggregator.store import EVENT, KPI_OBSERVATION, MILESTONE_STATE
from shared.catalogue import Catalogue
from shared.events import KPI_TYPE, MILESTONE_TYPE

KNOWN_MILESTONE = sa.Table(
    "replay_known_milestone",
    sa.MetaData(),
    sa.Column("proposal", sa.String(Id), primary_key=True),
    sa.Column("milestone", sa.String(Id), primary_key=True),
    prefixes=["TEMPORARY"],
)
"""The catalogue's (proposal, milestone) pairs, for the length of one replay."""


async def replay(*, database_url: str, catalogue: Catalogue) -> int:
    """Rebuild milestone_state and kpi_observation from ``event``; the number of events folded."""
    engine = make_engine(database_url)
    try:
        async with engine.execution_options(**WRITER_OPTIONS).begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    sa.text("LOCK TABLE milestone_state, kpi_observation IN EXCLUSIVE MODE")
                )
            milestones = await _rebuild_milestones(connection, catalogue)
            kpis = await _rebuild_kpis(connection, catalogue)
    finally:
        await engine.dispose()
    return milestones + kpis


def _newest_first(*key: sa.ColumnElement[str]) -> sa.Label[int]:
    """Rank of each event within its key: 1 for the newest by (event time, stream sequence)."""
    return (
        sa.func.row_number()
        .over(partition_by=key, order_by=(EVENT.c.event_time.desc(), EVENT.c.stream_seq.desc()))
        .label("rank")
    )


async def _refill(
    connection: AsyncConnection, table: sa.Table, folded: sa.Select[Any], ranked: sa.Subquery
) -> int:
    """Replace ``table`` with the newest row of each key in ``ranked``; count ``folded``."""
    await connection.execute(sa.delete(table))
    columns = [c.name for c in table.columns]
    newest = sa.select(*(ranked.c[name] for name in columns)).where(ranked.c.rank == 1)
    await connection.execute(sa.insert(table).from_select(columns, newest))
    return int((await connection.execute(folded)).scalar_one())


async def _fill_known_milestones(connection: AsyncConnection, catalogue: Catalogue) -> None:
    """Fill the temporary table of the catalogue's milestones."""
    await connection.run_sync(KNOWN_MILESTONE.create)
    pairs = [
        {"proposal": p.id, "milestone": m.id} for p in catalogue.proposals for m in p.milestones
    ]
    if pairs:
        await connection.execute(sa.insert(KNOWN_MILESTONE), pairs)
    if connection.dialect.name == "postgresql":
        # A temporary table has no statistics until analysed: the planner would guess.
        await connection.execute(sa.text(f"ANALYZE {KNOWN_MILESTONE.name}"))


def _known(rows: sa.Table | sa.Subquery) -> sa.Join:
    """``rows`` (with proposal and milestone columns) joined with the known milestones."""
    return rows.join(
        KNOWN_MILESTONE,
        sa.and_(
            KNOWN_MILESTONE.c.proposal == rows.c.proposal,
            KNOWN_MILESTONE.c.milestone == rows.c.milestone,
        ),
    )


async def _rebuild_milestones(connection: AsyncConnection, catalogue: Catalogue) -> int:
    await _fill_known_milestones(connection, catalogue)
    which = EVENT.c.type == MILESTONE_TYPE
    ranked = (
        sa.select(
            EVENT.c.proposal,
            EVENT.c.milestone,
            EVENT.c.data["status"].as_string().label("status"),
            EVENT.c.event_time,
            EVENT.c.stream_seq,
            EVENT.c.source,
            EVENT.c.event_id,
            EVENT.c.data["note"].as_string().label("note"),
            _newest_first(EVENT.c.proposal, EVENT.c.milestone),
        )
        .select_from(_known(EVENT))
        .where(which)
        .subquery()
    )
    # Counted per milestone first, then joined: joined event by event, PostgreSQL chose a
    # nested loop over the proposal index that took twice as long as the rebuild itself.
    per_milestone = (
        sa.select(EVENT.c.proposal, EVENT.c.milestone, sa.func.count().label("events"))
        .where(which)
        .group_by(EVENT.c.proposal, EVENT.c.milestone)
        .subquery()
    )
    folded = sa.select(sa.func.coalesce(sa.func.sum(per_milestone.c.events), 0)).select_from(
        _known(per_milestone)
    )
    count = await _refill(connection, MILESTONE_STATE, folded, ranked)
    await connection.run_sync(KNOWN_MILESTONE.drop)
    return count


async def _rebuild_kpis(connection: AsyncConnection, catalogue: Catalogue) -> int:
    which = (EVENT.c.type == KPI_TYPE, EVENT.c.kpi.in_([k.id for k in catalogue.kpis]))
    period = EVENT.c.data["period"].as_string()
    ranked = (
        sa.select(
            EVENT.c.kpi,
            period.label("period"),
            EVENT.c.data["value"].as_float().label("value"),
            EVENT.c.event_time,
            EVENT.c.stream_seq,
            EVENT.c.source,
            EVENT.c.event_id,
            _newest_first(EVENT.c.kpi, period),
        )
        .where(*which)
        .subquery()
    )
    folded = sa.select(sa.func.count()).select_from(EVENT).where(*which)
    return await _refill(connection, KPI_OBSERVATION, folded, ranked)
