"""Status changes decided by the database row: once per change, whichever replica passes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.aggregator.db import make_engine, session_factory, upgrade
from services.aggregator.status import StatusEvent, StatusPublisher
from shared.catalogue import Catalogue

from .harness import FakeClock

PROPOSALS = {"1a", "2a", "2b", "3a", "3b", "prevention", "ai-cluster"}


class Replica:
    """One aggregator's status publisher, with its own engine, recording what it publishes."""

    def __init__(self, url: str, catalogue: Catalogue, clock: FakeClock) -> None:
        self.engine = make_engine(url)
        self.sent: list[StatusEvent] = []
        self.failing = False
        self.publisher = StatusPublisher(
            catalogue=catalogue,
            readers=session_factory(self.engine),
            writers=session_factory(self.engine, writer=True),
            clock=clock,
            publish=self.publish,
            interval=60,
        )

    async def publish(self, event: StatusEvent) -> None:
        await asyncio.sleep(0.01)  # the other replica runs meanwhile
        if self.failing:
            raise ConnectionError("NATS is away")
        self.sent.append(event)


@pytest.fixture
async def replicas(
    database_url: str, catalogue: Catalogue
) -> AsyncIterator[tuple[Replica, Replica, FakeClock]]:
    await upgrade(database_url)
    clock = FakeClock()
    one, two = Replica(database_url, catalogue, clock), Replica(database_url, catalogue, clock)
    yield one, two, clock
    await one.engine.dispose()
    await two.engine.dispose()


async def test_two_replicas_publish_each_change_once(
    replicas: tuple[Replica, Replica, FakeClock],
) -> None:
    one, two, _ = replicas
    await asyncio.gather(one.publisher.publish_changes(), two.publisher.publish_changes())
    first = one.sent + two.sent
    assert sorted(e.data.proposal for e in first) == sorted(PROPOSALS)
    assert {(e.data.version, e.data.rag, e.data.stalled) for e in first} == {(1, "red", True)}
    # Nothing changed: neither publishes again.
    await asyncio.gather(one.publisher.publish_changes(), two.publisher.publish_changes())
    assert len(one.sent + two.sent) == len(PROPOSALS)


async def test_a_failed_publish_is_retried_on_the_next_pass(
    replicas: tuple[Replica, Replica, FakeClock],
) -> None:
    one, _, clock = replicas
    one.failing = True
    with pytest.raises(ConnectionError):
        await one.publisher.publish_changes()
    one.failing = False
    clock.advance(timedelta(hours=1))
    sent = await one.publisher.publish_changes()
    assert {e.data.proposal for e in sent} == PROPOSALS
    assert {e.data.version for e in sent} == {1}  # the failed attempt left no trace
