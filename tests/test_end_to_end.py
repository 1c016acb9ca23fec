"""The pipeline end to end: HTTP into a column service, JetStream, the aggregator, the read side.

Real parts only: a nats-server from the wheel, the column services' and the aggregator's
own apps, SQLite and PostgreSQL. What an authority posts must show up in /v1/programme,
/v1/events and /metrics, once, however often it was sent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.aggregator.app import create_app
from shared.natsserver import NatsServer
from shared.tokens import TokenStore
from tests.aggregator.harness import eventually, settings_for
from tests.ingest.support import running as running_ingest
from tests.ingest.support import settings_for as ingest_settings_for

NOW = datetime.now(UTC).replace(microsecond=0)


def milestone(event_id: str, proposal: str, milestone_id: str, status: str, at: datetime) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "greater-manchester",
        "type": "org.cotn.milestone.v1",
        "time": at.isoformat(),
        "data": {"proposal": proposal, "milestone": milestone_id, "status": status},
    }


def kpi(event_id: str, value: float, period: str, at: datetime) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "greater-manchester",
        "type": "org.cotn.kpi.v1",
        "time": at.isoformat(),
        "data": {"kpi": "exports", "value": value, "period": period},
    }


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` by its sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_posted_events_reach_the_board_and_metrics_once(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path
) -> None:
    token, _ = TokenStore.in_dir(tmp_path).create("greater-manchester")
    batch = [
        milestone("e2e-1", "1a", "joint-position", "completed", NOW - timedelta(days=3)),
        milestone("e2e-2", "1a", "cluster-evidence", "in_progress", NOW - timedelta(days=1)),
        # A late backfill: older than e2e-2 for the same milestone, so it must not win.
        milestone("e2e-3", "1a", "cluster-evidence", "blocked", NOW - timedelta(days=2)),
    ]
    ingest_settings = ingest_settings_for(fresh_nats.url, tmp_path, column="devolution")
    business_settings = ingest_settings_for(fresh_nats.url, tmp_path, column="business")
    # The real clock: health is rated at now, the events are a few days old.
    aggregator = create_app(
        settings_for(fresh_nats.url, database_url), clock=lambda: datetime.now(UTC)
    )
    async with (
        aggregator.router.lifespan_context(aggregator),
        running_ingest(ingest_settings, token) as devolution,
        running_ingest(business_settings, token) as business,
    ):
        answers = await asyncio.gather(
            devolution.client.post(
                "/v1/events",
                json=batch,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/cloudevents-batch+json",
                },
            ),
            # The same batch again, concurrently: the second answer lists duplicates.
            devolution.client.post(
                "/v1/events",
                json=batch,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/cloudevents-batch+json",
                },
            ),
            business.client.post(
                "/v1/events",
                json=kpi("e2e-k1", 90.0, "2025-Q4", NOW),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/cloudevents+json",
                },
            ),
        )
        assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
        first, second = answers[0].json(), answers[1].json()
        assert sorted(first["accepted"] + second["accepted"]) == ["e2e-1", "e2e-2", "e2e-3"]
        assert sorted(first["duplicates"] + second["duplicates"]) == ["e2e-1", "e2e-2", "e2e-3"]

        transport = httpx.ASGITransport(aggregator)
        async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as read:

            async def ready() -> bool:
                return (await read.get("/readyz")).status_code == 200

            # The aggregator migrates and subscribes in the background: read once it has.
            await eventually(ready, "the aggregator ready")

            async def audit() -> list[dict] | None:
                page = (await read.get("/v1/events", params={"limit": 100})).json()
                return page["events"] if len(page["events"]) >= 4 else None

            events = await eventually(audit, "four events in the audit trail")
            assert sorted(e["id"] for e in events) == ["e2e-1", "e2e-2", "e2e-3", "e2e-k1"]

            board = (await read.get("/v1/programme")).json()
            proposals = {p["id"]: p for c in board["columns"] for p in c["proposals"]}
            milestones = {m["id"]: m for m in proposals["1a"]["milestones"]}
            assert milestones["joint-position"]["status"] == "completed"
            assert milestones["cluster-evidence"]["status"] == "in_progress"
            assert proposals["1a"]["stalled"] is False
            exports = next(k for k in board["kpis"] if k["id"] == "exports")
            assert exports["actual"] == 90.0 and exports["on_track"] is False

            # The counters follow the commit this client already reads by a moment.
            async def counted() -> str | None:
                text = (await read.get("/metrics")).text
                persisted = samples(text, "cotn_events_persisted_total")
                return text if sum(persisted.values()) >= 4 else None

            metrics = await eventually(counted, "the four stored events counted")
            completed = samples(metrics, "cotn_milestones")
            key = (("column", "devolution"), ("proposal", "1a"), ("status", "completed"))
            assert completed[key] == 1
            assert samples(metrics, "cotn_kpi_value")[(("kpi", "exports"),)] == 90.0
            persisted = samples(metrics, "cotn_events_persisted_total")
            assert sum(persisted.values()) == 4
