"""Rebuild the projections from the event log (``cotn replay``).

Each kind's projection (``milestone_state``, ``kpi_observation``, ...: see shared.kinds) is
a fold of ``event``: per key, the newest event by (event time, stream sequence), as the
consumer keeps them. Replay recomputes them
set-wise, in one transaction, with a window function over the log, so it ends in the state
live consumption reached. Only ids the given catalogue knows are folded, as the consumer
would with that catalogue: each kind's known entries go into a temporary table the log is
joined with
(a list of 10,000 ids in the statement itself would not even parse on PostgreSQL).

It is safe while an aggregator runs: on PostgreSQL the projections are locked against
writers for the transaction (readers go on), so a batch committed meanwhile is either in
the log replay reads or applied after it by the same newest-wins upsert; on SQLite the
transaction holds the database's write lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.aggregator.db import WRITER_OPTIONS, make_engine
from services.aggregator.storage import BACKENDS
from services.aggregator.storage.log import EVENT, newest_of_each_key, set_version, take_version
from shared.catalogue import Catalogue
from shared.kinds import KINDS, EventKind, Projection
from shared.tables import Id


async def replay(*, database_url: str, catalogue: Catalogue) -> int:
    """Rebuild every kind's projection from ``event``; the number of events folded."""
    engine = make_engine(database_url)
    folded = 0
    try:
        async with engine.execution_options(**WRITER_OPTIONS).begin() as connection:
            # The version first, as a store takes it (then the projections: one lock order).
            taken = await connection.execute(take_version(BACKENDS[connection.dialect.name].insert))
            version = taken.scalar_one() + 1
            folding = [(k, p) for k in KINDS if (p := k.projection(EVENT)) is not None]
            if connection.dialect.name == "postgresql" and folding:
                names = ", ".join(p.table.name for _, p in folding)
                await connection.execute(sa.text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
            for kind, projection in folding:
                folded += await _rebuild(connection, kind, projection, catalogue, version)
            # The projections may differ now, rows gone among them: every reader's snapshot
            # is stale, and read whole again.
            await connection.execute(set_version(version, rebuilt=True))
    finally:
        await engine.dispose()
    return folded


async def _known_entries(
    connection: AsyncConnection, kind: EventKind, catalogue: Catalogue
) -> sa.Table:
    """A temporary table of the catalogue entries of ``kind`` (its :meth:`known`), filled."""
    columns, entries = kind.known(catalogue)
    table = sa.Table(
        f"replay_known_{kind.name}",
        sa.MetaData(),
        *(sa.Column(name, sa.String(Id), primary_key=True) for name in columns),
        prefixes=["TEMPORARY"],
    )
    await connection.run_sync(table.create)
    if entries:
        await connection.execute(
            sa.insert(table), [dict(zip(columns, e, strict=True)) for e in entries]
        )
    if connection.dialect.name == "postgresql":
        # A temporary table has no statistics until analysed: the planner would guess.
        await connection.execute(sa.text(f"ANALYZE {table.name}"))
    return table


def _joined(rows: sa.Table | sa.Subquery, known: sa.Table) -> sa.Join:
    """``rows`` joined with the known entries, on the entries' columns."""
    return rows.join(known, sa.and_(*(known.c[c.name] == rows.c[c.name] for c in known.columns)))


async def _rebuild(
    connection: AsyncConnection,
    kind: EventKind,
    projection: Projection,
    catalogue: Catalogue,
    version: int,
) -> int:
    """Replace ``kind``'s projection with the fold of its known events; count them."""
    known = await _known_entries(connection, kind, catalogue)
    table = projection.table
    await connection.execute(sa.delete(table))
    newest = newest_of_each_key(projection, _joined(EVENT, known))
    await connection.execute(
        sa.insert(table).from_select([c.name for c in table.columns], newest),
        {"store_version": version},
    )
    # Counted per entry first, then joined: joined event by event, PostgreSQL chose a
    # nested loop over the proposal index that took twice as long as the rebuild itself.
    entry = [EVENT.c[c.name] for c in known.columns]
    per_entry = (
        sa.select(*entry, sa.func.count().label("events"))
        .where(EVENT.c.type == kind.type)
        .group_by(*entry)
        .subquery()
    )
    counted = sa.select(sa.func.coalesce(sa.func.sum(per_entry.c.events), 0)).select_from(
        _joined(per_entry, known)
    )
    count = int((await connection.execute(counted)).scalar_one())
    await connection.run_sync(known.drop)
    return count
