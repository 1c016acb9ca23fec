"""The services as real processes at the edges of their life: a seed of the NATS server list
down at start-up, NATS away while the backlog is watched, a graceful SIGTERM.

- ``--nats-url`` (``COTN_*_NATS_URL``) takes a comma-separated list of servers: a service
  starts and works while a seed of the list is down (a closed port here).
- ``cotn_consumer_backlog`` is absent while NATS cannot say how many messages wait, rather
  than repeating its last value; ``cotn_consumer_backlog_up`` says 0 meanwhile.
- After a graceful stop on SIGTERM a service exits 0, not -15.
"""

from __future__ import annotations

import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.natsserver import NatsServer, free_port
from tests.aggregator.harness import eventually

from .checks import exactly_once
from .load import Load
from .procs import Service, Services

pytestmark = pytest.mark.fault


async def samples(service: Service, name: str) -> list[float]:
    """The values of ``name`` on the service's ``/metrics`` (none when it is absent)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(service.url + "/metrics")).raise_for_status().text
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def test_the_services_start_and_work_while_a_seed_of_the_list_is_down(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    # Two seeds that refuse connections around the one that answers: whatever order the
    # client tries them in (nats-py shuffles the list), a down seed is in the way.
    down = [f"nats://127.0.0.1:{free_port()}" for _ in range(2)]
    seeds = ",".join([down[0], fresh_nats.url, down[1]])
    ingest = await services.ingest(seeds)
    await services.aggregator(seeds, sqlite_url)

    load = Load(lambda: ingest.url, services.tokens, "seeds", clients=2, max_batches=3)
    acked = await load.start().finished()
    assert len(acked) == 2 * 3 * load.batch_size
    # Every acknowledged event reached the aggregator through the list, and only once.
    await exactly_once(acked, sqlite_url, nats_url=fresh_nats.url)


async def test_the_backlog_is_absent_while_nats_cannot_say_it(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    aggregator = await services.aggregator(fresh_nats.url, sqlite_url)
    assert await eventually(lambda: samples(aggregator, "cotn_consumer_backlog"), "a backlog")

    fresh_nats.stop()

    async def unknown() -> bool:
        return await samples(aggregator, "cotn_consumer_backlog") == []

    await eventually(unknown, "the backlog to be absent while NATS is away")
    assert await samples(aggregator, "cotn_consumer_backlog_up") == [0]

    fresh_nats.start()  # the same store and port: the reading comes back
    assert await eventually(
        lambda: samples(aggregator, "cotn_consumer_backlog"), "the backlog once NATS is back"
    )
    assert await samples(aggregator, "cotn_consumer_backlog_up") == [1]


@pytest.mark.parametrize("kind", ["ingest", "aggregator"])
async def test_a_graceful_sigterm_exits_0(
    kind: str, fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    if kind == "ingest":
        service = await services.ingest(fresh_nats.url)
    else:
        service = await services.aggregator(fresh_nats.url, sqlite_url)
    service.signal(signal.SIGTERM)
    assert await service.exited(within=20) == 0, service.tail()
