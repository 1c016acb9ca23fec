"""Fixtures for the column service: the app in-process over a real nats-server.

Every test runs its own app (its own registry, token file and clock) against the session's
nats-server, and tells its events apart from other tests' by unique event ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.natsserver import NatsServer
from shared.tokens import TokenStore

from .support import SOURCE, Ingest, StreamProbe, probe_of, running, settings_for


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore.in_dir(tmp_path)


@pytest.fixture
def token(tokens: TokenStore) -> str:
    return tokens.create(SOURCE)[0]


@pytest.fixture
async def service(nats_server: NatsServer, tmp_path: Path, token: str) -> AsyncIterator[Ingest]:
    """A ready collaboration service on the session's nats-server."""
    async with running(settings_for(nats_server.url, tmp_path), token) as ingest:
        yield ingest


@pytest.fixture
async def stream(nats_server: NatsServer, service: Ingest) -> AsyncIterator[StreamProbe]:
    """The events stream as it stands once the service is ready."""
    async with probe_of(nats_server.url) as probe:
        await probe.mark()
        yield probe
