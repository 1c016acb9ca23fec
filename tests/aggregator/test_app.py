"""The aggregator app as a whole: built without connecting, started before NATS is up,
documented by FastStream's AsyncAPI, operational metrics on ``/metrics``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from faststream.specification import AsyncAPI

from services.aggregator.app import create_app
from shared.natsserver import NatsServer, free_port

from .harness import bus_at, database_at, eventually, milestone, settings_for


def test_create_app_connects_nothing(tmp_path: Path) -> None:
    database = tmp_path / "never" / "cotn.db"
    app = create_app(settings_for(f"nats://127.0.0.1:{free_port()}", f"sqlite:///{database}"))
    assert not database.parent.exists()
    assert app.state.aggregator.ready() == (False, "not started")


def test_asyncapi_documents_what_the_aggregator_reads_and_publishes(tmp_path: Path) -> None:
    app = create_app(settings_for("nats://127.0.0.1:4222", f"sqlite:///{tmp_path / 'x.db'}"))
    spec = AsyncAPI(app.state.aggregator.broker, title="COTN aggregator").to_specification()
    document = json.loads(spec.to_json())
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {"cotn.events.>", "cotn.status.{column}.{proposal}", "cotn.dlq.{reason}"}
    assert "StatusEvent" in document["components"]["schemas"]


@pytest.mark.fault
async def test_the_aggregator_waits_for_nats_then_consumes(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "nats", port=free_port())
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cotn.db'}"
    app = create_app(settings_for(server.url, database_url))
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://aggregator") as http,
        ):
            waiting = await eventually(
                lambda: _readiness(http, "connecting to NATS"), "/readyz to wait for NATS"
            )
            assert waiting.status_code == 503
            assert (await http.get("/healthz")).status_code == 200
            server.start()
            await eventually(lambda: _readiness(http, "consuming"), "/readyz to turn ready")
            async with bus_at(server.url) as bus, database_at(database_url) as db:
                await bus.publish(milestone("e1", "2a", "adoption-priorities", "completed"))
                await eventually(lambda: db.has_events(1), "the event stored")
            metrics = (await http.get("/metrics")).text
    finally:
        server.stop()
    assert 'cotn_events_persisted_total{type="org.cotn.milestone.v1"} 1.0' in metrics
    assert 'cotn_dead_letters_total{reason="invalid_json"} 0.0' in metrics
    assert "cotn_consumer_backlog" in metrics


async def _readiness(http: httpx.AsyncClient, detail: str) -> httpx.Response | None:
    response = await http.get("/readyz")
    return response if response.json()["detail"] == detail else None
