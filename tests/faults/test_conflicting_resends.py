"""The same (source, id) sent again: another payload is a 409 for ever, the same a duplicate.

JetStream's duplicate window is two seconds here, so "for ever" is checked after it has
passed, and from a second column-service process: the claims live on the bus, not in a
service. What the aggregator stores is read back through its read API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from services.ingest.claims import Claim, claim_key
from shared.bus import CLAIMS_BUCKET, EVENTS_STREAM, msg_id
from shared.kinds import KINDS
from shared.natsserver import NatsServer
from tests.aggregator.harness import T0, milestone

from .checks import connected
from .load import MILESTONE_KEYS
from .procs import Service, Services

pytestmark = pytest.mark.fault

WINDOW = 2.0
CE_JSON = {"Content-Type": "application/cloudevents+json"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}
AUTHORITY = "greater-manchester"
PROPOSAL, MILESTONE = MILESTONE_KEYS[0]


def changed(event: dict[str, Any]) -> dict[str, Any]:
    """The same event with another status: a correction sent under the old id."""
    return {**event, "data": {**event["data"], "status": "completed"}}


async def post(service: Service, token: str, body: Any, batch: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **(CE_BATCH if batch else CE_JSON)}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{service.url}/v1/events", json=body, headers=headers)


async def stream_messages(nats_url: str) -> int:
    async with connected(nats_url) as nc:
        return (await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages


async def stored(aggregator: Service, event_id: str, within: float = 20) -> list[dict[str, Any]]:
    """The audit trail's events of ``event_id``, once there is one."""
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            page = (await http.get(f"{aggregator.url}/v1/events?proposal={PROPOSAL}")).json()
            found = [e for e in page["events"] if e["id"] == event_id]
            if found or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.1)


def assert_conflict(answer: httpx.Response, index: int, event_id: str) -> None:
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert problem["type"] == "urn:cotn:problem:conflict"
    assert "nothing was published" in problem["detail"]
    [error] = problem["errors"]
    assert (error["index"], error["id"], error["field"]) == (index, event_id, "id")
    # It names the time of the event that holds the id, so the sender can find it.
    assert "2025-06-01T09:00:00Z" in error["reason"], error["reason"]


async def test_a_changed_resend_is_a_409_and_the_same_a_duplicate_for_ever(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    window = {"duplicate_window_seconds": WINDOW}
    aggregator = await services.aggregator(fresh_nats.url, sqlite_url, **window)
    ingest = await services.ingest(fresh_nats.url, **window)
    token = services.tokens[AUTHORITY]
    first = milestone("fix-1", PROPOSAL, MILESTONE, "in_progress", T0)

    answer = await post(ingest, token, first)
    assert answer.json() == {"accepted": ["fix-1"], "duplicates": []}
    for moment in ("inside the duplicate window", "after it"):
        assert_conflict(await post(ingest, token, changed(first)), 0, "fix-1")
        again = await post(ingest, token, first)
        assert again.json() == {"accepted": [], "duplicates": ["fix-1"]}, moment
        if moment.startswith("inside"):
            await asyncio.sleep(WINDOW + 0.5)  # the point of the wait: the window passes

    # Another process on the same bus knows it too (and so a restarted one).
    other = await services.ingest(fresh_nats.url, name="ingest-2", **window)
    assert_conflict(await post(other, token, changed(first)), 0, "fix-1")

    [kept] = await stored(aggregator, "fix-1")
    assert kept["data"]["status"] == "in_progress"
    # No change reached the aggregator: it had nothing to set aside.
    assert await aggregator.metric("cotn_event_conflicts_total") == 0


async def test_a_refused_batch_withdraws_its_claims(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    ingest = await services.ingest(fresh_nats.url)
    token = services.tokens[AUTHORITY]
    first = milestone("fix-2", PROPOSAL, MILESTONE, "in_progress", T0)
    new = milestone("new-2", PROPOSAL, MILESTONE, "at_risk", T0)
    assert (await post(ingest, token, first)).status_code == 202
    before = await stream_messages(fresh_nats.url)

    assert_conflict(await post(ingest, token, [new, changed(first)], batch=True), 1, "fix-2")
    assert await stream_messages(fresh_nats.url) == before, "a refused batch published"
    # new-2 was claimed for that request and withdrawn: alone, it is new, not a duplicate.
    answer = await post(ingest, token, new)
    assert answer.json() == {"accepted": ["new-2"], "duplicates": []}


async def test_an_event_claimed_but_never_published_lands_when_sent_again(
    fresh_nats: NatsServer, services: Services, sqlite_url: str
) -> None:
    """A service killed between claim and publish leaves a claim without an event: the same
    event sent again is answered as a resend and is published, so it is not lost."""
    aggregator = await services.aggregator(fresh_nats.url, sqlite_url)
    ingest = await services.ingest(fresh_nats.url)
    event = milestone("cut-3", PROPOSAL, MILESTONE, "blocked", T0)
    parsed = KINDS.parse(event)
    async with connected(fresh_nats.url) as nc:
        bucket = await nc.jetstream().key_value(CLAIMS_BUCKET)
        held = Claim(digest=parsed.digest, time="2025-06-01T09:00:00Z")
        await bucket.create(claim_key(msg_id(AUTHORITY, "cut-3")), held.encode())
    before = await stream_messages(fresh_nats.url)

    answer = await post(ingest, services.tokens[AUTHORITY], event)
    assert answer.json() == {"accepted": [], "duplicates": ["cut-3"]}
    assert await stream_messages(fresh_nats.url) == before + 1
    [kept] = await stored(aggregator, "cut-3")
    assert kept["data"]["status"] == "blocked"
