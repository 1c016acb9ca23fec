"""Poison published straight to the events stream, between the column services' events.

Messages no column service would publish (not JSON, an unknown proposal, an invalid event)
are dead-lettered (a ``dead_letter`` row and a copy on ``cotn.dlq.<reason>``) and
acknowledged; the stream moves on and every acknowledged event is stored once.
"""

from __future__ import annotations

import json

import pytest

from shared.bus import DLQ_STREAM, DLQ_SUBJECTS
from shared.natsserver import NatsServer
from tests.aggregator.harness import Bus, bus_at, milestone

from .checks import exactly_once
from .load import Load
from .procs import Services

pytestmark = pytest.mark.fault

POISON = {
    "invalid_json": ("cotn.events.collaboration.2a.milestone", b"{not json"),
    "unknown_proposal": (
        "cotn.events.collaboration.9z.milestone",
        json.dumps(milestone("p-unknown", "9z", "some-milestone", "completed")).encode(),
    ),
    "invalid_event": (
        "cotn.events.collaboration.2a.milestone",
        json.dumps({"specversion": "1.0", "id": "p-invalid", "source": "np11"}).encode(),
    ),
}


async def publish_poison(bus: Bus) -> None:
    for reason, (subject, payload) in POISON.items():
        await bus.publish_raw(subject, payload, {"Nats-Msg-Id": f"poison:{reason}"})


async def test_poison_is_dead_lettered_and_the_rest_stored_once(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    aggregator = await services.aggregator(fresh_nats.url, sqlite_url)
    ingest = await services.ingest(fresh_nats.url)
    load = Load(lambda: ingest.url, services.tokens, "poison").start()
    await load.until_acked(200)

    async with bus_at(fresh_nats.url) as bus:
        await publish_poison(bus)
        await load.until_acked(len(load.acked) + 200)
        load.stop()
        expected = {reason: 1 for reason in POISON}
        await exactly_once(
            await load.finished(), sqlite_url, nats_url=fresh_nats.url, dead_letters=expected
        )
        letters = await bus.read_stream(DLQ_STREAM, DLQ_SUBJECTS)

    assert {m.subject: m.data for m in letters} == {
        f"cotn.dlq.{reason}": payload for reason, (_, payload) in POISON.items()
    }
    assert await aggregator.metric("cotn_dead_letters_total") == len(POISON)
