"""The service and an absent or failing NATS: 503 with Retry-After, and retries land once."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from shared.bus import EVENTS_STREAM, MSG_ID_HEADER
from shared.natsserver import NatsServer, free_port

from .support import (
    CE_BATCH,
    SOURCE,
    StreamProbe,
    assert_problem,
    is_ready,
    milestone,
    probe_of,
    running,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.fault


async def test_bus_outage_is_503_and_the_retried_batch_lands_once(
    fresh_nats: NatsServer, tmp_path: Path, token: str
) -> None:
    settings = settings_for(fresh_nats.url, tmp_path)
    async with running(settings, token) as service:
        first = milestone()
        assert (await service.post(first)).status_code == 202
        batch = [first, milestone(), milestone()]
        ids = [e["id"] for e in batch]

        fresh_nats.stop()
        await wait_for(lambda: _not_ready(service.client))
        refused = await service.post(batch, content_type=CE_BATCH)

        assert_problem(refused, 503, "bus_unavailable", errors=[])
        assert refused.headers["retry-after"] == "2"

        fresh_nats.start()  # same store directory, same port
        await wait_for(lambda: is_ready(service.client))
        async with probe_of(fresh_nats.url) as stream:
            assert await _msg_ids(stream, ids) == [ids[0]], "nothing of the refused batch landed"

            retried = await service.post(batch, content_type=CE_BATCH)

            assert retried.status_code == 202, retried.text
            assert retried.json() == {"accepted": ids[1:], "duplicates": ids[:1]}
            assert await _msg_ids(stream, ids) == ids
    assert service.metric("cotn_ingest_rejections_total", reason="bus_unavailable") == 1


async def test_service_starts_without_nats_and_gets_ready_when_it_comes(
    tmp_path: Path, token: str
) -> None:
    server = NatsServer(store_dir=tmp_path / "nats", port=free_port())
    try:
        async with running(settings_for(server.url, tmp_path), token, wait_ready=False) as service:
            assert (await service.client.get("/healthz")).status_code == 200
            not_ready = await service.client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json() == {"status": "not ready", "reason": "not connected to NATS"}
            assert_problem(await service.post(milestone()), 503, "bus_unavailable", errors=[])

            server.start()
            await wait_for(lambda: is_ready(service.client))

            assert (await service.post(milestone())).status_code == 202
            async with probe_of(server.url) as stream:
                info = await stream.js.stream_info(EVENTS_STREAM)
                assert info.config.duplicate_window == 120
    finally:
        server.stop()


async def test_shutdown_while_nats_is_away_is_prompt(tmp_path: Path, token: str) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()

    async with running(settings_for(url, tmp_path), token, wait_ready=False) as service:
        assert (await service.client.get("/healthz")).status_code == 200

    assert time.monotonic() - started < 2


async def _not_ready(client: httpx.AsyncClient) -> bool:
    return not await is_ready(client)


async def _msg_ids(stream: StreamProbe, event_ids: Iterable[str]) -> list[str]:
    """The ids of these events on the stream, in stream order, once per stored message."""
    prefix = f"{SOURCE}:"
    return [
        m.headers[MSG_ID_HEADER].removeprefix(prefix)
        for m in await stream.landed(event_ids)
        if m.headers
    ]


async def test_publish_without_an_ack_is_503_and_publishes_nothing(
    fresh_nats: NatsServer, tmp_path: Path, token: str
) -> None:
    async with running(settings_for(fresh_nats.url, tmp_path), token) as service:
        async with probe_of(fresh_nats.url) as stream:
            await stream.js.delete_stream(EVENTS_STREAM)

            refused = await service.post([milestone(), milestone()], content_type=CE_BATCH)

            problem = assert_problem(refused, 503, "bus_unavailable", errors=[])
            assert "2 of 2 events not acknowledged" in problem["detail"]
            assert refused.headers["retry-after"] == "2"
            assert (await service.client.get("/readyz")).status_code == 503


async def test_nats_refusing_the_connection_leaves_the_service_not_ready(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer(
        store_dir=tmp_path / "nats", extra_config='authorization { token: "not-ours" }\n'
    ).start()
    try:
        async with running(settings_for(server.url, tmp_path), token, wait_ready=False) as service:

            async def failure_logged() -> bool:
                return any("NATS set-up failed" in r.message for r in caplog.records)

            await wait_for(failure_logged)

            assert (await service.client.get("/healthz")).status_code == 200
            assert (await service.client.get("/readyz")).status_code == 503
    finally:
        server.stop()
