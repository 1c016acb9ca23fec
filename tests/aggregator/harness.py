"""Helpers for the aggregator's pipeline tests: a real nats-server, a real database.

Events reach the stream the way a column service publishes them: a structured CloudEvent
body that ``shared.events`` accepts, on ``shared.bus.event_subject(...)``, with
``Nats-Msg-Id = msg_id(source, id)`` and ``stream=COTN_EVENTS`` so each publish is acked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.aggregator import queries
from services.aggregator.app import Aggregator, create_app
from services.aggregator.db import make_engine, session_factory
from services.aggregator.models import EventPublic
from services.aggregator.settings import AggregatorSettings
from shared.bus import (
    CONTENT_TYPE,
    EVENTS_STREAM,
    MSG_ID_HEADER,
    StreamSettings,
    ensure_streams,
    event_subject,
    msg_id,
)
from shared.catalogue import Catalogue, load_catalogue
from shared.health import ProgrammeState
from shared.kinds import KINDS
from shared.kinds.milestone import MilestoneEvent

T = TypeVar("T")
CATALOGUE = load_catalogue()
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    """An aware ``now`` that tests move by hand."""

    now: datetime = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def js_reply(seq: int, stored_at: datetime, delivered: int = 1) -> str:
    """The reply subject JetStream gives a delivery: where nats-py reads its metadata."""
    stamp = int(stored_at.timestamp()) * 1_000_000_000 + stored_at.microsecond * 1000
    return f"$JS.ACK.COTN_EVENTS.cotn-aggregator.{delivered}.{seq}.{seq}.{stamp}.0"


def settings_for(nats_url: str, database_url: str, **overrides: Any) -> AggregatorSettings:
    """Settings for a test: short waits, no periodic status pass unless asked."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "batch_timeout_seconds": 0.05,
        "status_interval_seconds": 3600,
        "status_min_gap_seconds": 0.05,
        "backlog_interval_seconds": 0.2,
        "retry_delay_min_seconds": 0.2,
        "retry_delay_max_seconds": 0.5,
        "graceful_timeout_seconds": 5,
        "sqlite_busy_timeout_ms": 200,
    }
    return AggregatorSettings(**(values | overrides))


@asynccontextmanager
async def running(
    settings: AggregatorSettings, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Aggregator]:
    """The aggregator app through its lifespan, once it consumes."""
    app = create_app(settings, clock=clock or FakeClock())
    aggregator: Aggregator = app.state.aggregator
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(aggregator.consuming.wait(), timeout=30)
        yield aggregator


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within: float = 20.0, every: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last {value!r}")
        await asyncio.sleep(every)


def milestone(
    event_id: str,
    proposal: str,
    milestone_id: str,
    status: str,
    time: datetime = T0,
    *,
    source: str = "greater-manchester",
    note: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"proposal": proposal, "milestone": milestone_id, "status": status}
    if note is not None:
        data["note"] = note
    return _cloudevent(event_id, source, "org.cotn.milestone.v1", time, data)


def kpi(
    event_id: str,
    kpi_id: str,
    value: float,
    period: str,
    time: datetime = T0,
    *,
    source: str = "np11",
) -> dict[str, Any]:
    data = {"kpi": kpi_id, "value": value, "period": period}
    return _cloudevent(event_id, source, "org.cotn.kpi.v1", time, data)


def cloudevent(
    event_id: str, source: str, time: str, data: dict[str, Any], kind: str = "milestone"
) -> dict[str, Any]:
    """A CloudEvent of ``kind`` as a client writes it, ``time`` as given."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": f"org.cotn.{kind}.v1",
        "time": time,
        "data": data,
    }


def _cloudevent(
    event_id: str, source: str, type_: str, time: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    kind = type_.removeprefix("org.cotn.").removesuffix(".v1")
    return cloudevent(event_id, source, time.isoformat().replace("+00:00", "Z"), data, kind)


def subject_of(body: dict[str, Any], catalogue: Catalogue = CATALOGUE) -> str:
    """The subject a column service files the event under."""
    event = KINDS.parse(body)
    if isinstance(event, MilestoneEvent) or getattr(event.data, "kpi", None) is None:
        proposal = event.data.proposal
    else:
        proposal = catalogue.kpi_by_id[event.data.kpi].evidences[0]
    return event_subject(catalogue.column_of[proposal], proposal, KINDS.of(event).name)


@dataclass
class Bus:
    """A nats-py connection publishing as a column service does."""

    nc: Client
    js: JetStreamContext
    published: int = field(default=0)

    async def publish(
        self, body: dict[str, Any], *, msg_id_suffix: str = "", subject: str | None = None
    ) -> None:
        headers = {
            MSG_ID_HEADER: msg_id(body["source"], body["id"]) + msg_id_suffix,
            "content-type": CONTENT_TYPE,
        }
        await self.publish_raw(subject or subject_of(body), json.dumps(body).encode(), headers)

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        await self.js.publish(subject, payload, stream=EVENTS_STREAM, headers=headers)
        self.published += 1

    async def publish_all(self, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            await self.publish(body)

    async def read_stream(self, stream: str, subjects: str) -> list[Msg]:
        """Every message of ``stream`` on ``subjects``, read by a throwaway consumer."""
        sub = await self.js.pull_subscribe(
            subjects,
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=5,
            ),
        )
        messages: list[Msg] = []
        try:
            # Counted when the consumer is made: read exactly those, however slow the host.
            wanted = (await sub.consumer_info()).num_pending
            while len(messages) < wanted:
                messages += await sub.fetch(min(100, wanted - len(messages)), timeout=10)
        finally:
            await sub.unsubscribe()
        return messages


@asynccontextmanager
async def bus_at(url: str) -> AsyncIterator[Bus]:
    """A connection to ``url`` with the project's streams in place."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, StreamSettings())
    try:
        yield Bus(nc, js)
    finally:
        await nc.close()


@dataclass
class Database:
    """The test's own view of the aggregator's database."""

    url: str

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        self.sessions = session_factory(self.engine)

    async def counts(self) -> dict[str, int]:
        async with self.sessions() as session:
            return await queries.counts(session=session)

    async def state(self) -> ProgrammeState:
        async with self.sessions() as session:
            return await queries.load_state(session=session)

    async def events(self, **filters: Any) -> list[EventPublic]:
        """The whole audit trail, page by page."""
        out: list[EventPublic] = []
        cursor = None
        async with self.sessions() as session:
            while True:
                page, cursor = await queries.list_events(
                    session=session, cursor=cursor, limit=500, **filters
                )
                out += page
                if cursor is None:
                    return out

    async def has_events(self, n: int) -> bool:
        return (await self.counts())["events"] >= n


@asynccontextmanager
async def database_at(url: str) -> AsyncIterator[Database]:
    db = Database(url)
    try:
        yield db
    finally:
        await db.engine.dispose()


def sample(registry: Any, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
