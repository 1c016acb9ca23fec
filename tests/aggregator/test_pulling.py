"""Pulling the events stream (``services/aggregator/pulling.py``) against a real nats-server:
what has arrived is handed over at once, a backlog still comes in full batches, at most one
pull waits on the server at a time, and the aggregator stores a lone event without waiting
for its batch window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from services.aggregator.consumer import consumer_config
from services.aggregator.pulling import adapt_pull_subscriptions
from shared.bus import AGGREGATOR_DURABLE, EVENTS_STREAM, EVENTS_SUBJECTS
from shared.natsserver import NatsServer

from .harness import T0, Bus, Database, eventually, milestone, running, settings_for

LONG_WINDOW = 60.0
"""A batch window far longer than any wait here: handing over must not wait for it."""


@pytest.fixture
async def pulled(
    bus: Bus, fresh_nats: NatsServer
) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """The aggregator's durable consumer, pulled as the aggregator pulls it."""
    settings = settings_for(fresh_nats.url, "sqlite+aiosqlite://")
    await bus.js.add_consumer(EVENTS_STREAM, consumer_config(settings))
    js = bus.nc.jetstream()
    adapt_pull_subscriptions(js)
    subscription = await js.pull_subscribe(
        EVENTS_SUBJECTS, durable=AGGREGATOR_DURABLE, stream=EVENTS_STREAM
    )
    yield subscription
    await subscription.unsubscribe()


def events(n: int, prefix: str = "p") -> list[dict[str, object]]:
    return [
        milestone(f"{prefix}{i}", "2a", "adoption-priorities", "in_progress", T0) for i in range(n)
    ]


async def test_what_has_arrived_is_handed_over_without_waiting_for_a_full_batch(
    bus: Bus, pulled: JetStreamContext.PullSubscription
) -> None:
    await bus.publish_all(events(3))
    got = await asyncio.wait_for(pulled.fetch(batch=500, timeout=LONG_WINDOW), LONG_WINDOW / 2)
    assert len(got) == 3
    for msg in got:
        await msg.ack()


async def test_a_backlog_comes_in_full_batches(
    bus: Bus, pulled: JetStreamContext.PullSubscription
) -> None:
    await bus.publish_all(events(1200))
    sizes = []
    while sum(sizes) < 1200:
        got = await pulled.fetch(batch=500, timeout=LONG_WINDOW)
        sizes.append(len(got))
        for msg in got:
            await msg.ack()
    assert sizes == [500, 500, 200]


async def test_a_quiet_stream_waits_with_one_pull_and_hands_over_the_first_arrival(
    bus: Bus, pulled: JetStreamContext.PullSubscription
) -> None:
    waiting = asyncio.ensure_future(pulled.fetch(batch=500, timeout=LONG_WINDOW))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    info = await bus.js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
    assert info.num_waiting == 1
    await bus.publish(events(1, "lone")[0])
    got = await asyncio.wait_for(waiting, LONG_WINDOW / 2)
    assert [m.headers["Nats-Msg-Id"] for m in got] == ["greater-manchester:lone0"]
    await got[0].ack()
    # The first arrival ended the pull: nothing is left waiting on the server for nobody.
    info = await bus.js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
    assert info.num_waiting == 0
    await bus.publish(events(1, "next")[0])
    got = await asyncio.wait_for(pulled.fetch(batch=500, timeout=LONG_WINDOW), LONG_WINDOW / 2)
    assert [m.headers["Nats-Msg-Id"] for m in got] == ["greater-manchester:next0"]


async def test_a_fetch_with_nothing_arriving_times_out(
    pulled: JetStreamContext.PullSubscription,
) -> None:
    import nats.errors

    with pytest.raises(nats.errors.TimeoutError):
        await pulled.fetch(batch=500, timeout=0.3)


async def test_the_aggregator_stores_a_lone_event_long_before_its_batch_window_ends(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    settings = settings_for(fresh_nats.url, database_url, batch_timeout_seconds=LONG_WINDOW)
    async with running(settings):
        await asyncio.sleep(0.5)  # the consumer is waiting on a quiet stream
        await bus.publish(events(1, "lone")[0])
        await eventually(lambda: db.has_events(1), "the lone event", within=LONG_WINDOW / 4)
        await bus.publish(events(1, "second")[0])
        await eventually(lambda: db.has_events(2), "the next one", within=LONG_WINDOW / 4)
