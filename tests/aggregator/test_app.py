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

PERSISTED_ONE = 'cotn_events_persisted_total{type="org.cotn.milestone.v1"} 1.0'


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

            # Counted a moment after the commit this connection already sees.
            async def counted() -> str | None:
                text = (await http.get("/metrics")).text
                return text if PERSISTED_ONE in text else None

            metrics = await eventually(counted, "the stored event counted")
    finally:
        server.stop()
    assert 'cotn_dead_letters_total{reason="invalid_json"} 0.0' in metrics
    assert "cotn_consumer_backlog" in metrics


async def test_the_board_answers_503_until_the_schema_is_migrated(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database's directory should be")
    database_url = f"sqlite+aiosqlite:///{blocker / 'cotn.db'}"
    app = create_app(settings_for(f"nats://127.0.0.1:{free_port()}", database_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://aggregator") as http,
    ):
        await eventually(
            lambda: _readiness(http, "migrating the database"), "/readyz to say it migrates"
        )
        for path in ("/v1/programme", "/v1/proposals/1a", "/v1/kpis", "/v1/events"):
            response = await http.get(path)
            assert response.status_code == 503, path
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["Retry-After"] == "5"
            assert "the database schema is being migrated" in response.json()["detail"]
        scrape = await http.get("/metrics")
        assert scrape.status_code == 200
        assert "cotn_aggregator_database_up 0.0" in scrape.text
        assert "cotn_proposal_rag" not in scrape.text  # never read: nothing to repeat
        assert (await http.get("/healthz")).status_code == 200

        blocker.unlink()  # the directory can be made: the migration goes through

        async def board() -> httpx.Response | None:
            response = await http.get("/v1/programme")
            return response if response.status_code == 200 else None

        await eventually(board, "the board once the schema is migrated")
        scrape = await http.get("/metrics")
    assert "cotn_aggregator_database_up 1.0" in scrape.text
    assert 'cotn_proposal_rag{column="devolution",proposal="1a"}' in scrape.text


async def _readiness(http: httpx.AsyncClient, detail: str) -> httpx.Response | None:
    response = await http.get("/readyz")
    return response if response.json()["detail"] == detail else None
