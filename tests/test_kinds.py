"""The event kind is the unit of extension: a kind added through the registry alone goes the
whole way (door, bus, store, audit trail, documents); a kind the registry does not know is
refused at the door and dead-lettered by the consumer, never folded as another kind.

Real parts: a nats-server from the wheel, the column service's and the aggregator's own
apps, SQLite and PostgreSQL.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import pytest
import yaml

from services.cli import asyncapi
from shared.catalogue import Catalogue
from shared.events import CloudEvent, Frozen, Ref
from shared.kinds import KINDS, EventKind
from shared.natsserver import NatsServer
from shared.problems import Problem
from tests.aggregator.harness import bus_at, database_at, eventually, sample
from tests.pipeline import pipeline

RISK_TYPE = "org.cotn.test-risk.v1"


class RiskData(Frozen):
    proposal: Ref
    risk: Ref
    level: Literal["low", "high"]


class RiskEvent(CloudEvent):
    type: Literal["org.cotn.test-risk.v1"]
    data: RiskData


class Risks(EventKind):
    """A throw-away kind: a partner raises a risk on a proposal. No projection."""

    type: ClassVar[str] = RISK_TYPE
    name: ClassVar[str] = "risk"
    model: ClassVar[builtins.type[CloudEvent]] = RiskEvent
    description: ClassVar[str] = "A risk raised on a proposal by one of its partners"

    def check(
        self, event: Any, *, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        proposal = catalogue.proposal_by_id.get(event.data.proposal)
        if proposal is None or catalogue.column_of[proposal.id] != column:
            return [Problem("data.proposal", "not a proposal of this column", code="bad_subject")]
        if authority is not None and authority not in proposal.partners:
            return [Problem("data.proposal", f"{authority!r} is not a partner", 403)]
        return []

    def proposal(self, event: Any, *, catalogue: Catalogue, column: str) -> str:
        return str(event.data.proposal)


@pytest.fixture
def risks() -> Iterator[EventKind]:
    with KINDS.added(Risks()) as kind:
        yield kind


def risk(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "greater-manchester",
        "type": RISK_TYPE,
        "time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "data": {"proposal": "1a", "risk": "funding-gap", "level": "high"},
    }


def milestone(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "greater-manchester",
        "type": "org.cotn.milestone.v1",
        "time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "data": {"proposal": "1a", "milestone": "joint-position", "status": "in_progress"},
    }


async def test_a_kind_added_through_the_registry_is_accepted_stored_and_listed(
    risks: EventKind, fresh_nats: NatsServer, database_url: str, tmp_path: Path
) -> None:
    async with (
        pipeline(fresh_nats.url, database_url, tmp_path) as (app, devolution),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://agg") as read,
    ):
        answer = await devolution.post(risk("risk-1"))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": ["risk-1"], "duplicates": []}
        # At the door its own checks run: a partner of another column's proposal is refused.
        other = risk("risk-2") | {"data": {"proposal": "2a", "risk": "x", "level": "low"}}
        refused = await devolution.post(other)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "data.proposal"

        async def listed() -> list[dict[str, Any]] | None:
            page = await read.get("/v1/events", params={"type": RISK_TYPE})
            return page.json()["events"] if page.status_code == 200 else None

        [stored] = await eventually(listed, "the risk event in the audit trail")
        assert (stored["id"], stored["proposal"], stored["column"]) == (
            "risk-1",
            "1a",
            "devolution",
        )
        assert stored["data"] == risk("risk-1")["data"]
        persisted = app.state.aggregator.registry
        assert sample(persisted, "cotn_events_persisted_total", type=RISK_TYPE) == 1
        # Its subject, built from the kind's token by the column service.
        async with bus_at(fresh_nats.url) as bus:
            [message] = await bus.read_stream("COTN_EVENTS", "cotn.events.>")
        assert message.subject == "cotn.events.devolution.1a.risk"
        # No projection: the board is as before, nothing was folded as a milestone or KPI.
        async with database_at(database_url) as db:
            counts = await db.counts()
        assert (counts["events"], counts["milestone_states"], counts["dead_letters"]) == (1, 0, 0)

    document = yaml.safe_load(asyncapi.document())
    channel = document["channels"]["cotn.events.devolution.risk"]
    assert channel["address"] == "cotn.events.devolution.{proposal}.risk"
    assert "RiskEvent" in document["components"]["schemas"]
    # And the column service's OpenAPI document describes it as a request body.
    schemas = devolution.app.openapi()["components"]["schemas"]
    assert RISK_TYPE in json.dumps(schemas["CloudEvent"])


async def test_an_unknown_kind_is_refused_at_the_door_and_dead_lettered_by_the_consumer(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path
) -> None:
    assert RISK_TYPE not in KINDS.by_type
    async with (
        pipeline(fresh_nats.url, database_url, tmp_path) as (app, devolution),
        bus_at(fresh_nats.url) as bus,
        database_at(database_url) as db,
    ):
        refused = await devolution.post(risk("risk-1"))
        assert refused.status_code == 422
        [error] = refused.json()["errors"]
        assert error["field"] == "type"
        assert error["reason"] == f"must be one of {', '.join(KINDS.types)}"

        # A message of that kind on the stream all the same (another producer, a rollback):
        # a dead letter, and the stream moves on to the next event.
        await bus.publish(risk("risk-1"), subject="cotn.events.devolution.1a.risk")
        await bus.publish(milestone("after-1"))

        async def settled() -> dict[str, int] | None:
            counts = await db.counts()
            return counts if counts["events"] == 1 and counts["dead_letters"] == 1 else None

        await eventually(settled, "one event stored and one dead letter")
        [stored] = await db.events()
        assert stored.id == "after-1"
        registry = app.state.aggregator.registry

        async def counted() -> bool:
            return sample(registry, "cotn_dead_letters_total", reason="unknown_type") == 1

        await eventually(counted, "the dead letter counted as unknown_type")
