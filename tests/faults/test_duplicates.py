"""A duplicate storm: the same events posted by many clients at once, then again later.

Across every concurrent post, each event is "accepted" exactly once and "duplicate"
otherwise: the claims bucket decides who is first. After JetStream's duplicate window (two
seconds here) the column service still answers "duplicate" (the claim is kept for ever) and
publishes the resend again, in case a first publish was cut short; the stream takes it as a
new message and the database's permanent uniqueness on (source, id) keeps one row each.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from shared.bus import EVENTS_STREAM
from shared.natsserver import NatsServer

from .checks import connected, exactly_once
from .load import Answer, Load, batch_events, post_all
from .procs import Services

pytestmark = pytest.mark.fault

WINDOW = 2.0
STORM = 6  # clients posting the same batches at the same time
BATCHES = 8


def accepted_once(answers: list[Answer], events: int) -> bool:
    """Every event was accepted by exactly one of the answers."""
    counts = Counter(i for a in answers for i in a.accepted)
    return len(counts) == events and set(counts.values()) == {1}


async def test_a_duplicate_storm_stores_one_row_each(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    window = {"duplicate_window_seconds": WINDOW}
    aggregator = await services.aggregator(fresh_nats.url, sqlite_url, **window)
    ingest = await services.ingest(fresh_nats.url, **window)
    load = Load(lambda: ingest.url, services.tokens, "storm")
    batches = [batch_events("storm", 0, number, 20) for number in range(BATCHES)]
    events = BATCHES * 20

    first = await post_all(load, batches * STORM)
    assert accepted_once(first, events), "the stream kept more or fewer than one copy each"
    # The point of this wait: the duplicate window must pass.
    await asyncio.sleep(WINDOW + 0.5)
    again = await post_all(load, batches * 2)
    assert not any(a.accepted for a in again), "a resend after the window was accepted"
    assert {i for a in again for i in a.duplicates} == {i for a in first for i in a.accepted}

    await exactly_once(load.acked, sqlite_url, nats_url=fresh_nats.url)
    async with connected(fresh_nats.url) as nc:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
    assert info.state.messages == 2 * events  # one copy, then one of the resends after the window
    assert info.config.duplicate_window == WINDOW
    assert await aggregator.metric("cotn_event_duplicates_total") == events
