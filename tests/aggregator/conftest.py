"""Fixtures the aggregator's test modules share: a bus and a database of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.natsserver import NatsServer

from .harness import Bus, Database, bus_at, database_at


@pytest.fixture
async def bus(fresh_nats: NatsServer) -> AsyncIterator[Bus]:
    async with bus_at(fresh_nats.url) as b:
        yield b


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test's database, tables made by the app or the test (some modules migrate it
    first with a ``db`` of their own)."""
    async with database_at(database_url) as database:
        yield database
