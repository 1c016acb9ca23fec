"""A column service killed with SIGKILL while batches are in flight; clients retry the same ids.

A request cut short may already have been published: the stream holds its events, its
client never heard the 202. The retry to the restarted service (same port, same ids) is
answered 202, listing those events as duplicates, and the database stores each one once.
The first test kills the service under plain load; the second freezes nats-server first,
so that every request in flight is certainly between publishing and its answer.
"""

from __future__ import annotations

import signal

import pytest

from shared.natsserver import NatsServer
from tests.aggregator.harness import eventually

from .checks import exactly_once
from .load import Load
from .procs import Services

pytestmark = pytest.mark.fault


async def test_column_service_killed_under_load_and_retried_stores_once(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    await services.aggregator(fresh_nats.url, sqlite_url)
    ingest = await services.ingest(fresh_nats.url)
    load = Load(lambda: ingest.url, services.tokens, "kill", clients=6, batch_size=100).start()
    await load.until_acked(1000)

    assert ingest.kill() == -signal.SIGKILL
    await ingest.start().ready()
    await load.until_acked(len(load.acked) + 1000)
    load.stop()

    await exactly_once(await load.finished(), sqlite_url, nats_url=fresh_nats.url)
    assert any(a.status is None for a in load.answers), "no request was cut short"


async def test_events_published_before_a_lost_answer_are_stored_once(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    await services.aggregator(fresh_nats.url, sqlite_url)
    # A publish timeout long enough that no request in flight gives up while NATS is frozen.
    ingest = await services.ingest(fresh_nats.url, publish_timeout_seconds=10)
    load = Load(lambda: ingest.url, services.tokens, "lost", clients=4, batch_size=50).start()
    await load.until_acked(400)

    # Frozen, NATS takes the requests' publishes into its socket buffers and answers nothing:
    # once the service is not ready (its 1 s probe timed out), every request is waiting.
    fresh_nats.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        await eventually(ingest.unready, "the column service to notice")
        ingest.kill()
    finally:
        fresh_nats.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    await ingest.start().ready()
    await load.until_acked(len(load.acked) + 400)
    load.stop()

    await exactly_once(await load.finished(), sqlite_url, nats_url=fresh_nats.url)
    lost = [a for a in load.answers if a.status is None]
    landed = [a for a in load.answers if a.attempt > 1 and a.status == 202 and a.duplicates]
    assert lost, "no request lost its answer"
    assert landed, "no retried request found its events already on the stream"
