"""History and dependencies end to end: a real nats-server, a real database (both).

Events are published as a column service publishes them and the board is read over HTTP
from the app running through its lifespan. ``received_at`` is the time JetStream stored an
event (the machine's clock), so these tests run their fake clock from the real time and
then forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from services.aggregator.app import Aggregator, create_app
from services.aggregator.settings import AggregatorSettings
from services.aggregator.status import StatusEvent
from shared.bus import STATUS_STREAM
from shared.catalogue import DEFAULT_CATALOGUE
from shared.natsserver import NatsServer

from .harness import Bus, Database, FakeClock, eventually, milestone
from .harness import settings_for as harness_settings


@asynccontextmanager
async def serving(
    settings: AggregatorSettings, clock: FakeClock
) -> AsyncIterator[tuple[Aggregator, httpx.AsyncClient]]:
    """The aggregator app through its lifespan, once it consumes, and a client of its API."""
    app = create_app(settings, clock=clock)
    aggregator: Aggregator = app.state.aggregator
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(aggregator.consuming.wait(), timeout=30)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as c:
            yield aggregator, c


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def without_view(board: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in board.items() if k not in ("as_at", "known_at")}


def status_of(board: dict[str, Any], pid: str, mid: str) -> str:
    proposal = next(p for c in board["columns"] for p in c["proposals"] if p["id"] == pid)
    return str(next(m for m in proposal["milestones"] if m["id"] == mid)["status"])


async def board(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/programme", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_board_as_it_was_shown_and_as_now_known(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    start = datetime.now(UTC)
    clock = FakeClock(start)
    settings = harness_settings(fresh_nats.url, database_url)
    async with serving(settings, clock) as (_, client):
        await bus.publish(milestone("a1", "1a", "joint-position", "in_progress", start - 2 * DAY))
        await eventually(lambda: db.has_events(1), "the first event stored")
        # Day one: what the live service shows.
        day_one = clock.now = datetime.now(UTC)
        shown_day_one = await board(client)
        assert status_of(shown_day_one, "1a", "joint-position") == "in_progress"

        # A backfill arrives later, about a time before day one: completed the day before.
        await asyncio.sleep(0.01)  # JetStream's clock must have moved past day one
        await bus.publish(milestone("late", "1a", "joint-position", "completed", start - DAY))
        await eventually(lambda: db.has_events(2), "the backfill stored")
        # Day two, a week on: the live board as shown then.
        clock.now = day_two = max(datetime.now(UTC), day_one) + 7 * DAY
        shown_day_two = await board(client)
        assert status_of(shown_day_two, "1a", "joint-position") == "completed"

        # The clock runs on and more events arrive, about times after day two.
        clock.advance(30 * DAY)
        later = day_two + DAY
        await bus.publish(milestone("a3", "1a", "cluster-evidence", "blocked", later))
        await bus.publish(milestone("a4", "2a", "adoption-priorities", "in_progress", later))
        await eventually(lambda: db.has_events(4), "the later events stored")

        # known_at: the board exactly as the live service showed it on day one.
        known = await board(client, known_at=z(day_one))
        assert without_view(known) == without_view(shown_day_one)
        assert known["known_at"] == z(day_one)
        # as_at: as now known for day one, the backfill included.
        as_at = await board(client, as_at=z(day_one))
        assert status_of(as_at, "1a", "joint-position") == "completed"
        assert without_view(as_at) != without_view(shown_day_one)
        both = await board(client, as_at=z(day_one), known_at=z(day_one))
        assert without_view(both) == without_view(shown_day_one)
        # Day two (run forward by the clock): nothing arrived late about it, so the board as
        # at day two is what was shown then. (known_at compares JetStream's real storage
        # times, which the fake clock has run ahead of: day one is the instant for it.)
        assert without_view(await board(client, as_at=z(day_two))) == without_view(shown_day_two)
        # And the live board has moved on.
        assert status_of(await board(client), "1a", "cluster-evidence") == "blocked"


DAY = timedelta(days=1)
CHAIN = [("1a", "joint-position"), ("2a", "adoption-priorities"), ("3b", "network-launched")]


def chain_catalogue(tmp_path: Path) -> Path:
    """The shipped catalogue with one dependency chain of three across proposals:
    1a/joint-position -> 2a/adoption-priorities -> 3b/network-launched (no other)."""
    raw = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    for proposal in raw["proposals"]:
        for m in proposal["milestones"]:
            m.pop("follows", None)
            if (proposal["id"], m["id"]) == CHAIN[1]:
                m["follows"] = [{"proposal": "1a", "milestone": "joint-position", "lag": "7d"}]
            if (proposal["id"], m["id"]) == CHAIN[2]:
                m["follows"] = [{"proposal": "2a", "milestone": "adoption-priorities"}]
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


async def test_a_chain_of_three_turns_amber_from_its_root_and_back(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(datetime(2025, 6, 15, 12, 0, tzinfo=UTC))
    settings = harness_settings(
        fresh_nats.url,
        database_url,
        catalogue=chain_catalogue(tmp_path),
        status_interval_seconds=0.1,
    )

    async def latest_status() -> dict[str, StatusEvent]:
        out: dict[str, StatusEvent] = {}
        for m in await bus.read_stream(STATUS_STREAM, "cotn.status.>"):
            event = StatusEvent.model_validate_json(m.data)
            out[event.data.proposal] = event
        return out

    async def rags_are(**wanted: str) -> dict[str, StatusEvent] | None:
        latest = await latest_status()
        got = {p: latest[p].data.rag for p in wanted if p in latest}
        return latest if got == wanted else None

    async with serving(settings, clock) as (_, client):
        # Fresh progress on the three proposals: green, nothing at risk.
        now = clock.now
        await bus.publish_all(
            [
                milestone("r1", "1a", "joint-position", "in_progress", now),
                milestone("r2", "2a", "adoption-priorities", "in_progress", now),
                milestone("r3", "3b", "network-terms", "in_progress", now, source="np11"),
            ]
        )
        await eventually(lambda: db.has_events(3), "the first events stored")
        await eventually(lambda: rags_are(**{"1a": "green", "2a": "green", "3b": "green"}), "green")

        # The root is blocked: its dependants are at risk at once, the whole chain named.
        clock.advance(timedelta(hours=1))
        await bus.publish(milestone("r4", "1a", "joint-position", "blocked", clock.now))
        latest = await eventually(
            lambda: rags_are(**{"1a": "red", "2a": "amber", "3b": "amber"}), "the chain at risk"
        )
        (reason,) = latest["3b"].data.reasons
        assert reason.rule == "milestone_dependency_at_risk"
        assert reason.chain == [f"{p}/{m}" for p, m in CHAIN]
        assert [(e.source, e.id) for e in reason.events] == [("greater-manchester", "r4")]
        body = await board(client)
        p2a = next(p for c in body["columns"] for p in c["proposals"] if p["id"] == "2a")
        priorities = next(m for m in p2a["milestones"] if m["id"] == "adoption-priorities")
        assert priorities["at_risk_because_of"] == ["1a/joint-position"]
        assert priorities["follows"] == [
            {"milestone": "1a/joint-position", "lag_seconds": 7 * 86400.0, "draft": True}
        ]

        # The root completes: the chain is green again, and says so in status events.
        clock.advance(timedelta(hours=1))
        await bus.publish(milestone("r5", "1a", "joint-position", "completed", clock.now))
        await eventually(
            lambda: rags_are(**{"1a": "green", "2a": "green", "3b": "green"}), "green again"
        )
    # Each dependant's status events: stalled before any event, green, at risk, green.
    for pid in ("2a", "3b"):
        column = "collaboration" if pid == "2a" else "business"
        messages = await bus.read_stream(STATUS_STREAM, f"cotn.status.{column}.{pid}")
        events = [StatusEvent.model_validate_json(m.data).data for m in messages]
        assert [(e.version, e.rag) for e in events] == [
            (1, "red"),
            (2, "green"),
            (3, "amber"),
            (4, "green"),
        ]
