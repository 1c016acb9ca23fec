"""nats-server away under load: stopped, frozen, or killed with SIGKILL and restarted.

While the bus cannot acknowledge, a column service answers 503 with Retry-After, never 202;
clients retry with the same ids once it is back. A 202 given before a SIGKILL survives it:
the server fsyncs every write before acknowledging (``sync_interval: always``).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from shared.natsserver import NatsServer
from tests.aggregator.harness import eventually

from .checks import exactly_once
from .load import Load
from .procs import INGEST_DEFAULTS, Services

pytestmark = pytest.mark.fault


def take_away(nats: NatsServer, how: str) -> None:
    if how == "stopped":
        nats.stop()  # SIGTERM: connections refused until it is back
    else:
        nats.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]  # no answers at all


def bring_back(nats: NatsServer, how: str) -> None:
    if how == "stopped":
        nats.start()  # the same store directory and port
    else:
        nats.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["stopped", "hung"])
async def test_bus_away_is_503_never_202_and_retries_land_once(
    how: str, fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    await services.aggregator(fresh_nats.url, sqlite_url)
    ingest = await services.ingest(fresh_nats.url)
    load = Load(lambda: ingest.url, services.tokens, how).start()
    await load.until_acked(200)
    loop = asyncio.get_running_loop()

    take_away(fresh_nats, how)
    try:
        await eventually(ingest.unready, "the column service to see the bus away")
        away_since = loop.time()

        async def refused() -> bool:
            return len(load.between(away_since, loop.time())) >= 4

        await eventually(refused, "requests refused while the bus is away")
    finally:
        bring_back(fresh_nats, how)
    back_at = loop.time()
    await load.until_acked(len(load.acked) + 200)
    load.stop()

    await exactly_once(await load.finished(), sqlite_url, nats_url=fresh_nats.url)
    during = load.between(away_since, back_at)
    assert {a.status for a in during} == {503}
    assert {a.retry_after for a in during} == {str(INGEST_DEFAULTS["retry_after_seconds"])}
    if how == "hung":
        # A frozen server still took the publishes into its buffers: the 503'd events landed,
        # and their retry is answered with them as duplicates. Stored once all the same.
        assert any(a.attempt > 1 and a.duplicates for a in load.answers)


async def test_nats_killed_under_load_loses_no_acknowledged_event(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    await services.aggregator(fresh_nats.url, sqlite_url)
    ingest = await services.ingest(fresh_nats.url)
    load = Load(lambda: ingest.url, services.tokens, "sigkill", clients=6).start()
    await load.until_acked(400)

    fresh_nats.stop(kill=True)
    acked_before_kill = set(load.acked)
    fresh_nats.start()  # the same store directory (file store, sync_interval always), port
    await load.until_acked(len(load.acked) + 400)
    load.stop()

    acked = await load.finished()
    assert acked_before_kill < acked
    await exactly_once(acked, sqlite_url, nats_url=fresh_nats.url)
