"""Two aggregator processes on one durable consumer and one PostgreSQL database.

Batches are shared between the replicas as they pull, so events of one milestone are
stored by both, in no particular order. The end state must be the one a single aggregator
reaches from the same stream: the same events, the same projections.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.bus import AGGREGATOR_DURABLE, EVENTS_STREAM
from shared.natsserver import NatsServer

from .checks import connected, exactly_once
from .load import Load
from .procs import Services

pytestmark = [pytest.mark.fault, pytest.mark.postgres, pytest.mark.slow]

# Small batches, so that the two replicas interleave often.
SMALL_BATCHES = {"batch_size": 20}


async def test_two_replicas_end_in_the_state_of_one(
    fresh_nats: NatsServer, services: Services, pg_url: str, other_pg_url: str
) -> None:
    one, two = await asyncio.gather(
        *(
            services.aggregator(fresh_nats.url, pg_url, name=name, **SMALL_BATCHES)
            for name in ("replica-1", "replica-2")
        )
    )
    ingest = await services.ingest(fresh_nats.url)
    load = Load(lambda: ingest.url, services.tokens, "replicas", clients=6, max_batches=12)
    acked = await load.start().finished()
    shared = await exactly_once(acked, pg_url, nats_url=fresh_nats.url)
    assert await one.metric("cotn_events_persisted_total") > 0
    assert await two.metric("cotn_events_persisted_total") > 0

    # The same stream from the start, through a single aggregator, into a database of its own.
    one.kill()
    two.kill()
    async with connected(fresh_nats.url) as nc:
        await nc.jetstream().delete_consumer(EVENTS_STREAM, AGGREGATOR_DURABLE)
    await services.aggregator(fresh_nats.url, other_pg_url, name="single", **SMALL_BATCHES)
    single = await exactly_once(acked, other_pg_url, nats_url=fresh_nats.url)

    assert shared.events == single.events
    assert shared.milestone_states == single.milestone_states
    assert shared.kpi_observations == single.kpi_observations
