"""Accepted events land on the stream once, with the contract's subject and headers."""

from __future__ import annotations

import asyncio
import json

from shared.bus import CONTENT_TYPE, MSG_ID_HEADER
from shared.tokens import TokenStore

from .support import CE_BATCH, SOURCE, Ingest, StreamProbe, kpi, milestone


async def test_posted_event_is_on_the_stream_once_with_subject_and_headers(
    service: Ingest, stream: StreamProbe
) -> None:
    event = milestone()

    response = await service.post(event)

    assert response.status_code == 202
    assert response.json() == {"accepted": [event["id"]], "duplicates": []}
    [message] = await stream.landed([event["id"]])
    assert message.subject == "cotn.events.collaboration.2a.milestone"
    assert message.headers is not None
    assert message.headers[MSG_ID_HEADER] == f"{SOURCE}:{event['id']}"
    assert message.headers["content-type"] == CONTENT_TYPE
    stored = json.loads(message.data or b"")
    assert stored["id"] == event["id"]
    assert stored["data"] == event["data"]


async def test_kpi_event_is_filed_under_the_proposal_it_evidences(
    service: Ingest, stream: StreamProbe, tokens: TokenStore
) -> None:
    token = tokens.create("northern-gritstone")[0]
    event = kpi()

    response = await service.post(event, token=token)

    assert response.status_code == 202, response.text
    [message] = await stream.landed([event["id"]], source="northern-gritstone")
    assert message.subject == "cotn.events.collaboration.2b.kpi"


async def test_event_posted_twice_is_stored_once_and_reported_duplicate(
    service: Ingest, stream: StreamProbe
) -> None:
    event = milestone()

    first = await service.post(event)
    second = await service.post(event)

    assert first.json() == {"accepted": [event["id"]], "duplicates": []}
    assert second.status_code == 202
    assert second.json() == {"accepted": [], "duplicates": [event["id"]]}
    assert len(await stream.landed([event["id"]])) == 1


async def test_concurrent_identical_posts_store_one_message(
    service: Ingest, stream: StreamProbe
) -> None:
    event = milestone()

    responses = await asyncio.gather(*(service.post(event) for _ in range(8)))

    assert [r.status_code for r in responses] == [202] * 8
    answers = [r.json() for r in responses]
    assert answers.count({"accepted": [event["id"]], "duplicates": []}) == 1
    assert answers.count({"accepted": [], "duplicates": [event["id"]]}) == 7
    assert len(await stream.landed([event["id"]])) == 1


async def test_same_event_twice_in_a_batch_is_published_once(
    service: Ingest, stream: StreamProbe
) -> None:
    event, other = milestone(), milestone(status="completed")

    response = await service.post([event, other, event], content_type=CE_BATCH)

    assert response.status_code == 202
    assert response.json() == {"accepted": [event["id"], other["id"]], "duplicates": [event["id"]]}
    assert len(await stream.landed([event["id"]])) == 1
    assert len(await stream.landed([other["id"]])) == 1


async def test_binary_content_mode_is_accepted(service: Ingest, stream: StreamProbe) -> None:
    event = milestone()
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event["id"],
        "ce-source": SOURCE,
        "ce-type": "org.cotn.milestone.v1",
        "ce-time": event["time"].replace("+", "%2B"),  # percent-encoded, as SDKs may send it
    }

    response = await service.post(event["data"], content_type="application/json", headers=headers)

    assert response.status_code == 202, response.text
    [message] = await stream.landed([event["id"]])
    stored = json.loads(message.data or b"")
    assert stored["data"] == event["data"]
    assert stored["datacontenttype"] == "application/json"
    assert message.subject == "cotn.events.collaboration.2a.milestone"


async def test_plain_json_structured_event_is_accepted(
    service: Ingest, stream: StreamProbe
) -> None:
    event = milestone()

    response = await service.post(event, content_type="application/json; charset=utf-8")

    assert response.status_code == 202, response.text
    assert len(await stream.landed([event["id"]])) == 1


async def test_batch_of_500_is_accepted_whole(service: Ingest, stream: StreamProbe) -> None:
    events = [milestone() for _ in range(500)]

    response = await service.post(events, content_type=CE_BATCH)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": [e["id"] for e in events], "duplicates": []}
    landed = await stream.landed(e["id"] for e in events)
    assert sorted(m.headers[MSG_ID_HEADER] for m in landed if m.headers) == sorted(
        f"{SOURCE}:{e['id']}" for e in events
    )


async def test_metrics_count_outcomes_and_requests(service: Ingest) -> None:
    accepted, bad = milestone(), milestone(milestone="no-such-milestone")
    await service.post(accepted)
    await service.post(accepted)
    await service.post([milestone(), bad], content_type=CE_BATCH)
    await service.post(b"{", content_type="application/json")

    milestone_type = "org.cotn.milestone.v1"
    assert service.metric("cotn_ingest_events_total", type=milestone_type, outcome="accepted") == 1
    assert service.metric("cotn_ingest_events_total", type=milestone_type, outcome="duplicate") == 1
    assert service.metric("cotn_ingest_events_total", type=milestone_type, outcome="rejected") == 2
    assert service.metric("cotn_ingest_rejections_total", reason="invalid") == 1
    assert service.metric("cotn_ingest_rejections_total", reason="not_json") == 1
    assert service.metric("cotn_ingest_rejections_total", reason="forbidden") == 0
    assert service.metric("cotn_ingest_request_duration_seconds_count") == 4

    exposition = (await service.client.get("/metrics")).text
    assert (
        'cotn_ingest_events_total{authority="greater-manchester",column="collaboration",'
        'outcome="accepted"' in exposition
    )
    assert "cotn_ingest_request_duration_seconds_bucket" in exposition


async def test_probes_answer(service: Ingest) -> None:
    assert (await service.client.get("/healthz")).json() == {"status": "ok"}
    assert (await service.client.get("/readyz")).json() == {"status": "ready"}
