"""Units of the column service that need no bus: decoding, settings, the app factory, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import Headers

from services.ingest.app import UnknownColumnError, create_app
from services.ingest.decoding import (
    Mode,
    binary_event,
    content_mode,
    decode_json,
    read_capped,
)
from services.ingest.problems import ProblemError
from services.ingest.settings import IngestSettings


@pytest.mark.parametrize(
    ("content_type", "headers", "mode"),
    [
        ("application/cloudevents+json", {}, Mode.STRUCTURED),
        ("Application/CloudEvents+JSON; charset=UTF-8", {}, Mode.STRUCTURED),
        ("application/json", {}, Mode.STRUCTURED),
        ("application/json", {"ce-specversion": "1.0"}, Mode.BINARY),
        ("application/cloudevents+json", {"ce-specversion": "1.0"}, Mode.STRUCTURED),
        ("application/cloudevents-batch+json", {}, Mode.BATCH),
    ],
)
def test_content_mode(content_type: str, headers: dict[str, str], mode: Mode) -> None:
    assert content_mode(content_type, Headers(headers)) is mode


def test_binary_event_takes_attributes_from_ce_headers() -> None:
    headers = Headers({"ce-id": "a%20b", "CE-Source": "np11", "content-type": "application/json"})

    event = binary_event(headers, {"kpi": "exports"})

    assert event == {
        "id": "a b",
        "source": "np11",
        "datacontenttype": "application/json",
        "data": {"kpi": "exports"},
    }


def test_decode_json_keeps_valid_unicode() -> None:
    assert decode_json('{"note": "caf\\u00e9 \\ud83d\\ude00 ✓"}'.encode()) == {"note": "café 😀 ✓"}


async def test_read_capped_allows_exactly_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    assert await read_capped(chunks(), 4) == b"abcd"
    with pytest.raises(ProblemError) as refused:
        await read_capped(chunks(), 3)
    assert refused.value.status == 413


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTN_INGEST_COLUMN", "devolution")
    monkeypatch.setenv("COTN_INGEST_NATS_URL", "nats://10.0.0.5:4223")
    monkeypatch.setenv("COTN_INGEST_MAX_BATCH", "100")

    settings = IngestSettings()

    assert settings.column == "devolution"
    assert str(settings.nats_url) == "nats://10.0.0.5:4223"
    assert settings.max_batch == 100
    assert settings.stream_settings().duplicate_window_seconds == 120


def test_settings_refuse_a_url_that_is_not_nats() -> None:
    with pytest.raises(ValueError, match="nats_url"):
        IngestSettings(column="business", nats_url="http://127.0.0.1:4222")


def test_unknown_column_is_refused_at_app_creation(tmp_path: Path) -> None:
    with pytest.raises(
        UnknownColumnError, match="choose one of collaboration, devolution, business"
    ):
        create_app(IngestSettings(column="transport", data_dir=tmp_path))


@pytest.mark.parametrize("column", ["collaboration", "devolution", "business"])
def test_one_implementation_serves_every_column(column: str, tmp_path: Path) -> None:
    app = create_app(IngestSettings(column=column, data_dir=tmp_path))

    assert app.title == f"COTN {column} column service"
    assert app.state.ingest.metrics.column == column


def test_openapi_documents_the_events_endpoint(tmp_path: Path) -> None:
    schema = create_app(IngestSettings(column="business", data_dir=tmp_path)).openapi()

    operation = schema["paths"]["/v1/events"]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "application/cloudevents+json",
        "application/json",
        "application/cloudevents-batch+json",
    }
    statuses = {"202", "400", "401", "403", "409", "413", "415", "421", "422", "429", "503"}
    assert set(operation["responses"]) == statuses
    problem = operation["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/ProblemDetails"}
    components = schema["components"]["schemas"]
    assert {"CloudEvent", "MilestoneEvent", "KpiEvent", "ProblemDetails", "EventError"} <= set(
        components
    )
    assert operation["security"] == [{"HTTPBearer": []}]


async def test_docs_page_is_served(tmp_path: Path) -> None:
    app = create_app(IngestSettings(column="devolution", data_dir=tmp_path))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        docs = await client.get("/docs")
        spec = await client.get("/openapi.json")

    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    assert spec.json()["info"]["title"] == "COTN devolution column service"
