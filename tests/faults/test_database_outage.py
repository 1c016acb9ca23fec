"""PostgreSQL away for longer than ack_wait under the aggregator process: nothing terminated.

The aggregator naks each batch it cannot store, with a growing delay, and JetStream
redelivers it (and redelivers it again each time ack_wait runs out): for as long as the
outage lasts, no message is terminated or given up after a delivery limit, the board
answers 503 with Retry-After and /metrics says the database is down. Once the database is
back, everything acknowledged is stored once.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nats.aio.msg import Msg

from shared.bus import AGGREGATOR_DURABLE, EVENTS_STREAM
from shared.natsserver import NatsServer
from tests.aggregator.harness import eventually

from .checks import connected, consumer_info, exactly_once, postgres_away
from .load import Load
from .procs import Service, Services

pytestmark = [pytest.mark.fault, pytest.mark.postgres]

ACK_WAIT = 1.0
ADVISORIES = [
    f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{EVENTS_STREAM}.{AGGREGATOR_DURABLE}"
    for kind in ("MSG_TERMINATED", "MAX_DELIVERIES")
]


async def test_database_down_longer_than_ack_wait_terminates_nothing(
    fresh_nats: NatsServer, services: Services, pg_url: str
) -> None:
    aggregator = await services.aggregator(fresh_nats.url, pg_url, ack_wait_seconds=ACK_WAIT)
    ingest = await services.ingest(fresh_nats.url)
    load = Load(lambda: ingest.url, services.tokens, "dbdown", clients=2).start()
    await load.until_acked(200)
    loop = asyncio.get_running_loop()
    terminated: list[Msg] = []

    async def note(msg: Msg) -> None:
        terminated.append(msg)

    async with connected(fresh_nats.url) as nc:
        for subject in ADVISORIES:
            await nc.subscribe(subject, cb=note)
        async with postgres_away(pg_url):
            down_since = loop.time()
            await eventually(lambda: says_database(aggregator), "/readyz to blame the database")
            await eventually(lambda: redelivering(fresh_nats.url), "batches coming back")
            async with httpx.AsyncClient(base_url=aggregator.url, timeout=15) as client:
                board = await client.get("/v1/programme")
                scrape = await client.get("/metrics")
            assert (board.status_code, board.headers.get("Retry-After")) == (503, "5")
            assert "cotn_aggregator_database_up 0.0" in scrape.text
            # Away for three ack_waits at least: the waits run out while nothing is stored.
            await asyncio.sleep(max(0.0, 3 * ACK_WAIT - (loop.time() - down_since)))
        load.stop()
        await exactly_once(await load.finished(), pg_url, nats_url=fresh_nats.url)
        await nc.flush()
    assert terminated == []
    info = await consumer_info(fresh_nats.url)
    assert info.config.max_deliver == -1


async def says_database(aggregator: Service) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(aggregator.url + "/readyz")
    return answer.status_code == 503 and "database" in answer.text


async def redelivering(nats_url: str) -> bool:
    return (await consumer_info(nats_url)).num_redelivered > 0
