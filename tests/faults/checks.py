"""What every fault test ends with: each 202-acknowledged event stored once, nothing else.

:func:`exactly_once` waits for the aggregator to settle (the durable consumer has nothing
pending or unacknowledged, and the database holds every acknowledged key), then compares
the database with the acknowledged set: the same keys, no conflicting copy, only the dead
letters the test expected, and projections that hold the newest stored event of each key
by (event time, stream sequence).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats
import nats.errors
import sqlalchemy as sa
from nats.aio.client import Client
from nats.js.api import ConsumerInfo
from sqlalchemy.engine import make_url

from services.aggregator.db import make_engine
from services.aggregator.storage.log import CONFLICT, DEAD_LETTER, EVENT
from shared.bus import AGGREGATOR_DURABLE, EVENTS_STREAM
from shared.kinds.kpi import KPI_OBSERVATION
from shared.kinds.milestone import MILESTONE_STATE

Key = tuple[str, str]
SETTLE_WITHIN = 60.0
PG_ADMIN_URL = os.environ.get("COTN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Stored:
    """What the database holds once the aggregator has settled."""

    events: frozenset[Key]
    milestone_states: dict[tuple[str, str], Key]
    kpi_observations: dict[tuple[str, str], Key]
    conflicts: int
    dead_letters: dict[str, int]
    newest_milestones: dict[tuple[str, str], Key]
    newest_kpis: dict[tuple[str, str], Key]


async def exactly_once(
    acked: Iterable[Key],
    database_url: str,
    *,
    nats_url: str | list[str] | None = None,
    dead_letters: dict[str, int] | None = None,
    within: float = SETTLE_WITHIN,
) -> Stored:
    """Assert that every acknowledged (source, id) is stored once and nothing else is.

    ``nats_url`` (one server or a cluster's) lets it wait for the consumer to drain first, so
    a late redelivery cannot slip in after the check; ``dead_letters`` are the reasons and
    counts of poison the test published itself.
    """
    acked = frozenset(acked)
    assert acked, "the test acknowledged nothing: it proves nothing"
    if nats_url is not None:
        await consumer_drained(nats_url, within)
    stored = await _settled(acked, database_url, within)
    missing, extra = acked - stored.events, stored.events - acked
    assert not missing and not extra, (
        f"{len(missing)} acknowledged events not stored (e.g. {sorted(missing)[:3]}), "
        f"{len(extra)} stored that were never acknowledged (e.g. {sorted(extra)[:3]})"
    )
    assert stored.conflicts == 0, f"{stored.conflicts} events stored as conflicting copies"
    # Ordered by event time, not arrival: each projection row is the newest stored event.
    assert stored.milestone_states == stored.newest_milestones, "milestone_state is not the newest"
    assert stored.kpi_observations == stored.newest_kpis, "kpi_observation is not the newest"
    assert stored.dead_letters == (dead_letters or {}), f"dead letters: {stored.dead_letters}"
    return stored


async def _settled(acked: frozenset[Key], database_url: str, within: float) -> Stored:
    """The database once it holds every acknowledged key (or after ``within`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    engine = make_engine(database_url)
    try:
        while True:
            stored = await _read(engine)
            if acked <= stored.events or loop.time() > deadline:
                return stored
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def _read(engine: Any) -> Stored:
    async with engine.connect() as connection:
        rows = (await connection.execute(sa.select(EVENT))).mappings().all()
        milestones = await _keys(connection, MILESTONE_STATE, "proposal", "milestone")
        kpis = await _keys(connection, KPI_OBSERVATION, "kpi", "period")
        conflicts = (
            await connection.execute(sa.select(sa.func.count()).select_from(CONFLICT))
        ).scalar_one()
        letters = await connection.execute(
            sa.select(DEAD_LETTER.c.reason, sa.func.count()).group_by(DEAD_LETTER.c.reason)
        )
    events = [(r["source"], r["event_id"]) for r in rows]
    assert len(events) == len(set(events)), "an event is stored twice"
    return Stored(
        events=frozenset(events),
        milestone_states=milestones,
        kpi_observations=kpis,
        conflicts=conflicts,
        dead_letters={reason: n for reason, n in letters.all()},
        newest_milestones=newest(rows, "milestone"),
        newest_kpis=newest(rows, "kpi"),
    )


async def _keys(connection: Any, table: sa.Table, *key: str) -> dict[tuple[str, str], Key]:
    """Projection key -> (source, event id) of the event it holds."""
    rows = await connection.execute(
        sa.select(*(table.c[k] for k in key), table.c.source, table.c.event_id)
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def newest(rows: Iterable[Any], kind: str) -> dict[tuple[str, str], Key]:
    """Per milestone or KPI period, the stored event newest by (event time, stream sequence),
    of those applied (a lock keeps an event aside: stored, never folded)."""
    best: dict[tuple[str, str], tuple[Any, int, Key]] = {}
    for r in rows:
        if r["held"] is not None:
            continue
        if r["type"] != f"org.cotn.{kind}.v1":  # a review names a KPI or milestone too
            continue
        if kind == "milestone":
            key = (r["proposal"], r["milestone"])
        elif kind == "kpi":
            key = (r["kpi"], r["data"]["period"])
        else:
            continue
        candidate = (r["event_time"], r["stream_seq"], (r["source"], r["event_id"]))
        if key not in best or candidate[:2] > best[key][:2]:
            best[key] = candidate
    return {key: value[2] for key, value in best.items()}


async def stored_count(database_url: str) -> int:
    """How many events the database holds now."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(EVENT)
            return int((await connection.execute(query)).scalar_one())
    finally:
        await engine.dispose()


# -- the durable consumer -----------------------------------------------------------------------


@asynccontextmanager
async def connected(nats_url: str | list[str]) -> AsyncIterator[Client]:
    """A nats-py connection of the test's own (a list: any server of a cluster)."""
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=5)
    try:
        yield nc
    finally:
        await nc.close()


async def consumer_info(nats_url: str | list[str]) -> ConsumerInfo:
    async with connected(nats_url) as nc:
        return await nc.jetstream(timeout=5).consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)


async def consumer_drained(
    nats_url: str | list[str], within: float = SETTLE_WITHIN
) -> ConsumerInfo:
    """Wait until the aggregator's consumer has nothing pending and nothing unacknowledged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: ConsumerInfo | Exception | None = None
    async with connected(nats_url) as nc:
        js = nc.jetstream(timeout=2)
        while True:
            try:
                last = await js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
            except (nats.errors.Error, TimeoutError) as exc:
                last = exc  # a cluster electing a new leader does not answer for a while
            else:
                if last.num_pending == 0 and last.num_ack_pending == 0:
                    return last
            if loop.time() > deadline:
                raise AssertionError(f"consumer not drained after {within}s: {last!r}")
            await asyncio.sleep(0.2)


# -- PostgreSQL away ---------------------------------------------------------------------------


@asynccontextmanager
async def postgres_away(database_url: str) -> AsyncIterator[None]:
    """The test's PostgreSQL database takes no connection, and its open ones are cut."""
    name = make_url(database_url).database
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
