"""The aggregator and a column service in-process, on a real nats-server and database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.aggregator.app import create_app
from shared.tokens import TokenStore
from tests.aggregator.harness import settings_for
from tests.ingest.support import running as running_ingest
from tests.ingest.support import settings_for as ingest_settings_for


@asynccontextmanager
async def pipeline(nats_url: str, database_url: str, data: Path) -> AsyncIterator[tuple[Any, Any]]:
    """The aggregator (consuming) and the devolution column service, built after the test's
    kinds are registered."""
    token, _ = TokenStore.in_dir(data).create("greater-manchester")
    app = create_app(settings_for(nats_url, database_url), clock=lambda: datetime.now(UTC))
    settings = ingest_settings_for(nats_url, data, column="devolution")
    async with app.router.lifespan_context(app), running_ingest(settings, token) as devolution:
        await asyncio.wait_for(app.state.aggregator.consuming.wait(), timeout=30)
        yield app, devolution
