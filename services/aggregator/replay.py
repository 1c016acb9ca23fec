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
from services.aggregator.store import (
    EVENT,
    KPI_OBSERVATION,
    MILESTONE_STATE,
    newest_of_each_key,
    projections,
)
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


async def _refill(
    connection: AsyncConnection, table: sa.Table, folded: sa.Select[Any], newest: sa.Select[Any]
) -> int:
    """Replace ``table`` with the rows of ``newest``; count ``folded``."""
    await connection.execute(sa.delete(table))
    await connection.execute(sa.insert(table).from_select([c.name for c in table.columns], newest))
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
    milestones, _ = projections(EVENT)
    newest = newest_of_each_key(milestones, _known(EVENT))
    # Counted per milestone first, then joined: joined event by event, PostgreSQL chose a
    # nested loop over the proposal index that took twice as long as the rebuild itself.
    per_milestone = (
        sa.select(EVENT.c.proposal, EVENT.c.milestone, sa.func.count().label("events"))
        .where(EVENT.c.type == MILESTONE_TYPE)
        .group_by(EVENT.c.proposal, EVENT.c.milestone)
        .subquery()
    )
    folded = sa.select(sa.func.coalesce(sa.func.sum(per_milestone.c.events), 0)).select_from(
        _known(per_milestone)
    )
    count = await _refill(connection, MILESTONE_STATE, folded, newest)
    await connection.run_sync(KNOWN_MILESTONE.drop)
    return count


async def _rebuild_kpis(connection: AsyncConnection, catalogue: Catalogue) -> int:
    _, kpis = projections(EVENT)
    known = EVENT.c.kpi.in_([k.id for k in catalogue.kpis])
    folded = sa.select(sa.func.count()).select_from(EVENT).where(EVENT.c.type == KPI_TYPE, known)
    return await _refill(
        connection, KPI_OBSERVATION, folded, newest_of_each_key(kpis, EVENT, known)
    )
