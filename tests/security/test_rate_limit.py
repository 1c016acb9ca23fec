"""The per-token rate limit of a column service: counted in events, 429 with Retry-After.

The bucket itself is tested with a hand-moved clock; the service with a limit small
enough (1 event a second, bursts of 3) that real time does not refill it during a test.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.ingest.ratelimit import RateLimiter
from services.ingest.settings import IngestSettings
from shared.natsserver import NatsServer
from shared.tokens import TokenStore
from tests.ingest.support import (
    CE_BATCH,
    SOURCE,
    Ingest,
    StreamProbe,
    assert_problem,
    milestone,
    probe_of,
    running,
    settings_for,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the bucket --------------------------------------------------------------------------------


def test_a_full_bucket_takes_a_burst_then_asks_to_wait_for_the_rest() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=500, monotonic=clock)

    assert limiter.take("t1", 500) == 0
    assert limiter.take("t1", 1) == 1  # 0.1 s, rounded up to whole seconds
    assert limiter.take("t1", 50) == 5


def test_the_bucket_refills_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=100, monotonic=clock)
    assert limiter.take("t1", 100) == 0

    clock.now += 3
    assert limiter.take("t1", 30) == 0
    assert limiter.take("t1", 1) == 1

    clock.now += 3600  # an idle hour refills the burst, no more
    assert limiter.take("t1", 100) == 0
    assert limiter.take("t1", 1) == 1


def test_tokens_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(rate=1, burst=5, monotonic=Clock())
    assert limiter.take("t1", 5) == 0
    assert limiter.take("t1", 1) == 1
    assert limiter.take("t2", 5) == 0


def test_a_refused_request_costs_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=10, monotonic=clock)
    assert limiter.take("t1", 8) == 0
    assert limiter.take("t1", 5) == 3  # needs 5, has 2: nothing taken
    clock.now += 3
    assert limiter.take("t1", 5) == 0


def test_the_burst_must_hold_a_full_batch() -> None:
    with pytest.raises(ValidationError, match=r"rate_limit_burst .* must be at least max_batch"):
        IngestSettings(column="business", max_batch=500, rate_limit_burst=499)
    defaults = IngestSettings(column="business")
    assert defaults.rate_limit_burst >= defaults.max_batch
    # A backfill of ten full batches goes through at once; then 100 events a second.
    assert defaults.rate_limit_burst == 5000 and defaults.rate_limit_per_second == 100


# -- the service ----------------------------------------------------------------------------


@pytest.fixture
async def limited(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Ingest]:
    """A collaboration service allowing 1 event a second, 3 at once (a full batch)."""
    token = TokenStore.in_dir(tmp_path).create(SOURCE)[0]
    settings = settings_for(
        nats_server.url, tmp_path, max_batch=3, rate_limit_per_second=1, rate_limit_burst=3
    )
    async with running(settings, token) as service:
        yield service


@pytest.fixture
async def stream(nats_server: NatsServer, limited: Ingest) -> AsyncIterator[StreamProbe]:
    async with probe_of(nats_server.url) as probe:
        await probe.mark()
        yield probe


async def test_over_the_limit_is_429_with_retry_after_and_publishes_nothing(
    limited: Ingest, stream: StreamProbe
) -> None:
    burst = [milestone() for _ in range(3)]
    assert (await limited.post(burst, content_type=CE_BATCH)).status_code == 202
    late = milestone()

    response = await limited.post(late)

    problem = assert_problem(response, 429, "rate_limited", errors=[])
    assert 1 <= int(response.headers["retry-after"]) <= 2
    assert "1 events a second, 3 at once" in problem["detail"]
    assert await stream.landed([late["id"]]) == []
    assert limited.metric("cotn_ingest_rejections_total", authority=SOURCE, reason="rate_limited")


async def test_a_batch_is_charged_per_event(limited: Ingest, stream: StreamProbe) -> None:
    assert (await limited.post(milestone())).status_code == 202  # 2 events left
    batch = [milestone() for _ in range(3)]

    response = await limited.post(batch, content_type=CE_BATCH)

    assert_problem(response, 429, "rate_limited", errors=[])
    assert response.headers["retry-after"] == "1"  # one more event's worth
    assert await stream.landed(e["id"] for e in batch) == []
    rejected = limited.metric(
        "cotn_ingest_events_total",
        authority=SOURCE,
        outcome="rejected",
        type="org.cotn.milestone.v1",
    )
    assert rejected == 3


async def test_a_throttled_client_costs_no_body_read(limited: Ingest) -> None:
    await limited.post([milestone() for _ in range(3)], content_type=CE_BATCH)
    read: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        read.append(1)
        yield b"[]"

    response = await limited.post(body())

    assert response.status_code == 429
    assert read == []


async def test_another_token_is_not_slowed(limited: Ingest, tmp_path: Path) -> None:
    await limited.post([milestone() for _ in range(3)], content_type=CE_BATCH)
    assert (await limited.post(milestone())).status_code == 429
    other = TokenStore.in_dir(tmp_path).create("liverpool-city-region")[0]

    response = await limited.post(milestone(source="liverpool-city-region"), token=other)

    assert response.status_code == 202, response.text


async def test_unauthenticated_requests_are_refused_before_the_limit(limited: Ingest) -> None:
    for _ in range(5):
        response = await limited.post(milestone(), token="", headers={})
        assert response.status_code == 401
    assert (await limited.post([milestone() for _ in range(3)], content_type=CE_BATCH)).is_success
    unknown = limited.metric("cotn_ingest_rejections_total", authority="unknown")
    assert unknown == 5


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=3, burst=3, monotonic=clock)
    limiter.take("t", 3)
    assert limiter.take("t", 1) == math.ceil(1 / 3)
