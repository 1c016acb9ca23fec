"""Helpers for the column service tests: event factories, the app in-process, the stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
from fastapi import FastAPI
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.bus import EVENTS_STREAM, MSG_ID_HEADER

CE_JSON = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
SOURCE = "greater-manchester"

PROBLEM_TITLES = {
    "not_json": "Body is not JSON",
    "too_large": "Content too large",
    "unsupported_media_type": "Unsupported media type",
    "unauthenticated": "Unauthenticated",
    "forbidden": "Forbidden",
    "rate_limited": "Too many events",
    "misdirected": "Misdirected request",
    "invalid": "Invalid event",
    "conflict": "Id already used by another event",
    "bus_unavailable": "Event bus unavailable",
}


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def milestone(
    event_id: str | None = None,
    *,
    source: str = SOURCE,
    proposal: str = "2a",
    milestone: str = "adoption-priorities",
    status: str = "in_progress",
    at: datetime | None = None,
) -> dict[str, Any]:
    """A valid milestone event for the collaboration column unless told otherwise."""
    return {
        "specversion": "1.0",
        "id": event_id or new_id(),
        "source": source,
        "type": "org.cotn.milestone.v1",
        "time": (at or datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "data": {"proposal": proposal, "milestone": milestone, "status": status},
    }


def kpi(
    event_id: str | None = None,
    *,
    source: str = "northern-gritstone",
    kpi_id: str = "early-stage-finance",
    value: float = 175.0,
    period: str = "2025-Q3",
) -> dict[str, Any]:
    """A valid KPI event for the collaboration column (early-stage finance evidences 2b)."""
    return {
        "specversion": "1.0",
        "id": event_id or new_id(),
        "source": source,
        "type": "org.cotn.kpi.v1",
        "time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "data": {"kpi": kpi_id, "value": value, "period": period},
    }


@dataclass
class Ingest:
    """A running column service and an HTTP client bound to it."""

    app: FastAPI
    client: httpx.AsyncClient
    token: str

    async def post(
        self,
        body: Any,
        *,
        token: str | None = None,
        content_type: str | None = CE_JSON,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST /v1/events; ``body`` is JSON-encoded unless it is bytes or a byte stream."""
        sent = {**({"content-type": content_type} if content_type else {}), **(headers or {})}
        if token != "":
            sent["authorization"] = f"Bearer {token or self.token}"
        content = body if isinstance(body, bytes) or hasattr(body, "__aiter__") else None
        if content is None:
            content = json.dumps(body).encode()
        return await self.client.post("/v1/events", content=content, headers=sent)

    def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of ``name`` with these labels (any authority unless given)."""
        registry = self.app.state.ingest.metrics.registry
        wanted = {"column": "collaboration", **labels}
        values = [
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == name and wanted.items() <= sample.labels.items()
        ]
        return sum(values) if values else None


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


async def is_ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@asynccontextmanager
async def running(
    settings: IngestSettings,
    token: str,
    *,
    clock: Callable[[], datetime] | None = None,
    wait_ready: bool = True,
) -> AsyncIterator[Ingest]:
    """The app inside its lifespan, ready unless told not to wait."""
    app = create_app(settings, clock=clock) if clock else create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            if wait_ready:
                await wait_for(lambda: is_ready(client))
            yield Ingest(app, client, token)


def settings_for(nats_url: str, data_dir: Path, **overrides: Any) -> IngestSettings:
    """Settings of a collaboration service with fast reconnects and a short publish timeout."""
    values: dict[str, Any] = {
        "column": "collaboration",
        "nats_url": nats_url,
        "data_dir": data_dir,
        "reconnect_wait_seconds": 0.1,
        "publish_timeout_seconds": 2.0,
        **overrides,
    }
    return IngestSettings(**values)


class StreamProbe:
    """Reads the events stream to see which of a test's events landed, and how often."""

    def __init__(self, js: JetStreamContext, after: int = 0) -> None:
        self.js = js
        self.after = after

    async def mark(self) -> None:
        """Ignore everything already on the stream."""
        self.after = (await self.js.stream_info(EVENTS_STREAM)).state.last_seq

    async def messages(self) -> list[RawStreamMsg]:
        last = (await self.js.stream_info(EVENTS_STREAM)).state.last_seq
        return [
            await self.js.get_msg(EVENTS_STREAM, seq) for seq in range(self.after + 1, last + 1)
        ]

    async def landed(self, event_ids: Iterable[str], source: str = SOURCE) -> list[RawStreamMsg]:
        """The stream messages of these events, in stream order."""
        wanted = {f"{source}:{event_id}" for event_id in event_ids}
        return [
            m for m in await self.messages() if m.headers and m.headers.get(MSG_ID_HEADER) in wanted
        ]


@asynccontextmanager
async def probe_of(url: str) -> AsyncIterator[StreamProbe]:
    connection = await nats.connect(url)
    try:
        yield StreamProbe(connection.jetstream())
    finally:
        await connection.close()


def assert_problem(
    response: httpx.Response, status: int, reason: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An RFC 9457 answer, checked field by field; ``errors`` exactly, when given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"}
    assert body["type"] == f"urn:cotn:problem:{reason}"
    assert body["title"] == PROBLEM_TITLES[reason]
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    if errors is not None:
        assert body["errors"] == errors
    return body
