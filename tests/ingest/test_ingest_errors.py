"""Every refusal of POST /v1/events: its status, its problem details, and nothing published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.natsserver import NatsServer
from shared.tokens import TokenStore

from .support import (
    CE_BATCH,
    CE_JSON,
    SOURCE,
    Ingest,
    StreamProbe,
    assert_problem,
    kpi,
    milestone,
    running,
    settings_for,
)

# --- 400: not JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail_part"),
    [
        (b'{"specversion": "1.0",', "not JSON"),
        (b'{"id": "caf\xe9"}', "not valid UTF-8"),
        (b'{"id": "a", "id": "b"}', "duplicate object key 'id'"),
        (b"[" * 33 + b"]" * 33, "nested more than 32 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 levels"),
        (b'{"value": NaN}', "NaN is not a JSON value"),
        (b'{"id": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b"", "not JSON"),
    ],
    ids=[
        "truncated",
        "latin-1",
        "duplicate-key",
        "depth-33",
        "depth-100k",
        "nan",
        "surrogate",
        "empty",
    ],
)
async def test_body_that_is_not_strict_json_is_400(
    service: Ingest, body: bytes, detail_part: str
) -> None:
    response = await service.post(body)

    problem = assert_problem(response, 400, "not_json", errors=[])
    assert detail_part in problem["detail"]


async def test_nesting_of_32_levels_is_json_enough(service: Ingest) -> None:
    nested: object = "deep"
    for _ in range(30):
        nested = [nested]
    event = milestone()
    event["data"]["note"] = nested  # depth 32 with the event and data objects

    response = await service.post(event)

    assert response.status_code == 422  # decoded, then refused: a note is text


# --- 413: too large --------------------------------------------------------------------------


@pytest.fixture
async def small_service(
    nats_server: NatsServer, tmp_path: Path, token: str
) -> AsyncIterator[Ingest]:
    """A service taking bodies of at most 1 KiB."""
    settings = settings_for(nats_server.url, tmp_path, max_body_bytes=1024)
    async with running(settings, token) as ingest:
        yield ingest


async def test_body_over_the_cap_is_413(small_service: Ingest) -> None:
    event = milestone()
    event["data"]["note"] = "x" * 2000

    response = await small_service.post(event)

    problem = assert_problem(response, 413, "too_large", errors=[])
    assert "1024 bytes" in problem["detail"]


async def test_chunked_body_without_length_is_cut_off_at_the_cap(small_service: Ingest) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(100):
            sent.append(n)
            yield b" " * 256

    response = await small_service.post(chunks())

    assert_problem(response, 413, "too_large", errors=[])
    assert len(sent) == 5  # 5 x 256 bytes is the first read past 1024: the rest is never read


async def test_declared_length_over_the_cap_is_refused_before_reading(
    small_service: Ingest,
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        sent.append(1)
        yield b"{}"

    response = await small_service.post(chunks(), headers={"content-length": "5000"})

    assert_problem(response, 413, "too_large", errors=[])
    assert sent == []


async def test_batch_over_max_batch_is_413_and_publishes_nothing(
    service: Ingest, stream: StreamProbe
) -> None:
    events = [milestone() for _ in range(501)]

    response = await service.post(events, content_type=CE_BATCH)

    problem = assert_problem(response, 413, "too_large", errors=[])
    assert "at most 500 events" in problem["detail"]
    assert await stream.landed(e["id"] for e in events) == []


# --- 415: content types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/plain", {}),
        (None, {}),
        ("application/xml", {}),
        ("application/cloudevents+json; charset=latin-1", {}),
        ("text/plain", {"ce-specversion": "1.0", "ce-id": "x"}),
    ],
    ids=["text", "missing", "xml", "latin-1", "binary-not-json"],
)
async def test_other_content_types_are_415(
    service: Ingest, content_type: str | None, headers: dict[str, str]
) -> None:
    response = await service.post(milestone(), content_type=content_type, headers=headers)

    assert_problem(response, 415, "unsupported_media_type", errors=[])


# --- 401: tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="cotn"'),
        ("Basic Z206cGFzcw==", 'Bearer realm="cotn"'),
        ("Bearer cotn_not-a-token-anyone-was-given", 'Bearer realm="cotn", error="invalid_token"'),
        ("Bearer ", 'Bearer realm="cotn"'),
    ],
    ids=["none", "basic", "unknown", "empty"],
)
async def test_missing_or_unknown_token_is_401(
    service: Ingest, stream: StreamProbe, authorization: str | None, challenge: str
) -> None:
    event = milestone()
    headers = {"authorization": authorization} if authorization else {}

    response = await service.post(event, token="", headers=headers)

    assert_problem(response, 401, "unauthenticated", errors=[])
    assert response.headers["www-authenticate"] == challenge
    assert await stream.landed([event["id"]]) == []


async def test_token_revoked_while_running_fails_at_once(
    service: Ingest, tokens: TokenStore, stream: StreamProbe
) -> None:
    assert (await service.post(milestone())).status_code == 202
    tokens.revoke(service.token)
    event = milestone()

    response = await service.post(event)

    assert_problem(response, 401, "unauthenticated", errors=[])
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await stream.landed([event["id"]]) == []


async def test_token_created_while_running_works_at_once(
    service: Ingest, tokens: TokenStore
) -> None:
    token = tokens.create("liverpool-city-region")[0]

    response = await service.post(milestone(source="liverpool-city-region"), token=token)

    assert response.status_code == 202, response.text


# --- 403: rights -----------------------------------------------------------------------------


async def test_source_other_than_the_tokens_authority_is_403(
    service: Ingest, stream: StreamProbe
) -> None:
    event = milestone(source="liverpool-city-region")

    response = await service.post(event)

    assert_problem(
        response,
        403,
        "forbidden",
        errors=[
            {
                "index": 0,
                "id": event["id"],
                "field": "source",
                "reason": "is 'liverpool-city-region' but the token belongs to "
                "'greater-manchester'",
            }
        ],
    )
    assert await stream.landed([event["id"]], source="liverpool-city-region") == []


async def test_authority_that_is_not_a_partner_is_403(service: Ingest, tokens: TokenStore) -> None:
    token = tokens.create("northern-gritstone")[0]
    event = milestone(source="northern-gritstone")

    response = await service.post(event, token=token)

    assert_problem(
        response,
        403,
        "forbidden",
        errors=[
            {
                "index": 0,
                "id": event["id"],
                "field": "data.proposal",
                "reason": "'northern-gritstone' is not a partner of proposal 2a",
            }
        ],
    )


async def test_authority_that_may_not_report_the_kpi_is_403(service: Ingest) -> None:
    event = kpi(source=SOURCE)

    response = await service.post(event)

    assert_problem(
        response,
        403,
        "forbidden",
        errors=[
            {
                "index": 0,
                "id": event["id"],
                "field": "data.kpi",
                "reason": "'greater-manchester' may not report KPI early-stage-finance",
            }
        ],
    )


async def test_rights_problems_come_first_and_every_problem_is_listed(
    service: Ingest, stream: StreamProbe
) -> None:
    wrong_source = milestone(source="liverpool-city-region")
    unknown_milestone = milestone(milestone="no-such-milestone")

    response = await service.post([unknown_milestone, wrong_source], content_type=CE_BATCH)

    problem = assert_problem(response, 403, "forbidden")
    assert [(e["index"], e["id"], e["field"]) for e in problem["errors"]] == [
        (0, unknown_milestone["id"], "data.milestone"),
        (1, wrong_source["id"], "source"),
    ]
    assert await stream.landed([unknown_milestone["id"]]) == []


# --- 422: validation -------------------------------------------------------------------------


async def test_batch_with_one_bad_event_publishes_nothing(
    service: Ingest, stream: StreamProbe
) -> None:
    good = [milestone() for _ in range(3)]
    bad = milestone(milestone="no-such-milestone")
    batch = [good[0], good[1], bad, good[2]]

    response = await service.post(batch, content_type=CE_BATCH)

    problem = assert_problem(response, 422, "invalid")
    assert problem["errors"] == [
        {
            "index": 2,
            "id": bad["id"],
            "field": "data.milestone",
            "reason": "unknown milestone 'no-such-milestone' of 2a (known: adoption-priorities, "
            "innovate-uk-agreement, campaign-launch, local-programmes-live, productivity-review)",
        }
    ]
    assert "1 of 4 events" in problem["detail"]
    assert await stream.landed(e["id"] for e in batch) == []


async def test_event_failing_the_model_keeps_its_id(service: Ingest) -> None:
    bad = milestone(status="done")
    del bad["time"]

    response = await service.post([milestone(), bad], content_type=CE_BATCH)

    problem = assert_problem(response, 422, "invalid")
    assert [(e["index"], e["id"], e["field"]) for e in problem["errors"]] == [
        (1, bad["id"], "time"),
        (1, bad["id"], "data.status"),
    ]
    assert problem["errors"][0]["reason"] == "is required"


async def test_event_without_a_string_id_is_listed_without_id(service: Ingest) -> None:
    bad = milestone()
    bad["id"] = 42

    response = await service.post(bad)

    problem = assert_problem(response, 422, "invalid")
    assert [(e["index"], e["id"], e["field"]) for e in problem["errors"]] == [(0, None, "id")]


async def test_proposal_of_another_column_names_the_right_service(service: Ingest) -> None:
    event = milestone(proposal="1a", milestone="joint-position")

    response = await service.post(event)

    assert_problem(
        response,
        422,
        "invalid",
        errors=[
            {
                "index": 0,
                "id": event["id"],
                "field": "data.proposal",
                "reason": "proposal '1a' belongs to the 'devolution' column: "
                "post it to the devolution column service",
            }
        ],
    )


async def test_time_beyond_five_minutes_ahead_of_the_clock_is_422(
    nats_server: NatsServer, tmp_path: Path, token: str
) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    settings = settings_for(nats_server.url, tmp_path)
    async with running(settings, token, clock=lambda: now) as service:
        soon = milestone(at=now + timedelta(minutes=4))
        late = milestone(at=now + timedelta(minutes=6))

        assert (await service.post(soon)).status_code == 202
        response = await service.post(late)

    assert_problem(
        response,
        422,
        "invalid",
        errors=[
            {
                "index": 0,
                "id": late["id"],
                "field": "time",
                "reason": "is more than 5 minutes in the future",
            }
        ],
    )


async def test_a_request_meant_for_another_column_is_421_and_publishes_nothing(
    service: Ingest, stream: StreamProbe
) -> None:
    meant_for_devolution = milestone()
    response = await service.post(meant_for_devolution, headers={"Cotn-Column": "devolution"})

    problem = assert_problem(response, 421, "misdirected")
    assert "collaboration column service" in problem["detail"]
    assert "'devolution'" in problem["detail"]
    assert await stream.landed([meant_for_devolution["id"]]) == []
    here = milestone()
    answer = await service.post(here, headers={"Cotn-Column": "collaboration"})
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("path", ["/v1/events", "/healthz", "/readyz", "/metrics"])
async def test_a_query_parameter_is_422_naming_it_and_publishes_nothing(
    service: Ingest, stream: StreamProbe, path: str
) -> None:
    event = milestone()
    headers = {"authorization": f"Bearer {service.token}", "content-type": CE_JSON}
    if path == "/v1/events":
        response = await service.client.post(
            path, params={"proposal": "2b", "dry_run": "1"}, json=event, headers=headers
        )
    else:
        response = await service.client.get(path, params={"proposal": "2b", "dry_run": "1"})

    reason = "is not a query parameter of this endpoint (it takes none)"
    problem = assert_problem(
        response,
        422,
        "invalid",
        errors=[
            {"index": None, "id": None, "field": "dry_run", "reason": reason},
            {"index": None, "id": None, "field": "proposal", "reason": reason},
        ],
    )
    assert "dry_run, proposal" in problem["detail"]
    assert await stream.landed([event["id"]]) == []


async def test_kpi_return_for_a_period_not_yet_begun_is_422(
    service: Ingest, stream: StreamProbe, tokens: TokenStore
) -> None:
    reporter = tokens.create("northern-gritstone")[0]
    today = datetime.now(UTC).date()
    current_quarter = f"{today.year}-Q{(today.month - 1) // 3 + 1}"
    answer = await service.post(kpi(period=current_quarter), token=reporter)
    assert answer.status_code == 202, answer.text

    future = kpi(period="2062-Q1")
    response = await service.post(future, token=reporter)

    problem = assert_problem(response, 422, "invalid")
    [error] = problem["errors"]
    assert (error["id"], error["field"]) == (future["id"], "data.period")
    assert error["reason"].startswith("2062-Q1 begins on 2062-01-01, after the event's time")
    assert await stream.landed([future["id"]], source="northern-gritstone") == []


@pytest.mark.parametrize("period", ["2025", "2025-07"])
async def test_kpi_return_for_a_period_of_another_frequency_is_422(
    service: Ingest, stream: StreamProbe, tokens: TokenStore, period: str
) -> None:
    reporter = tokens.create("northern-gritstone")[0]
    wrong = kpi(period=period)  # early-stage-finance is reported quarterly
    problem = assert_problem(await service.post(wrong, token=reporter), 422, "invalid")
    [error] = problem["errors"]
    assert (error["id"], error["field"]) == (wrong["id"], "data.period")
    assert f"{period} is a" in error["reason"] and "reported quarterly" in error["reason"]
    assert await stream.landed([wrong["id"]], source="northern-gritstone") == []


async def test_an_empty_batch_is_accepted_and_publishes_nothing(
    service: Ingest, stream: StreamProbe
) -> None:
    response = await service.post([], content_type=CE_BATCH)
    assert (response.status_code, response.json()) == (202, {"accepted": [], "duplicates": []})
    assert await stream.messages() == []


@pytest.mark.parametrize("body", [{"not": "an array"}, "events"], ids=["object", "string"])
async def test_batch_that_is_not_an_array_is_422(service: Ingest, body: object) -> None:
    response = await service.post(body, content_type=CE_BATCH)

    assert_problem(
        response,
        422,
        "invalid",
        errors=[
            {
                "index": None,
                "id": None,
                "field": "(batch)",
                "reason": "must be a JSON array of events",
            }
        ],
    )


async def test_array_sent_as_a_single_event_is_422(service: Ingest) -> None:
    response = await service.post([milestone()])

    problem = assert_problem(response, 422, "invalid")
    assert [e["index"] for e in problem["errors"]] == [0]


async def test_rejections_are_counted_by_reason(service: Ingest) -> None:
    await service.post(milestone(), token="", headers={})
    await service.post(milestone(), content_type="text/plain")
    await service.post(milestone(source="liverpool-city-region"))

    assert service.metric("cotn_ingest_rejections_total", reason="unauthenticated") == 1
    assert service.metric("cotn_ingest_rejections_total", reason="unsupported_media_type") == 1
    assert service.metric("cotn_ingest_rejections_total", reason="forbidden") == 1


async def test_unknown_path_is_a_problem_too(service: Ingest) -> None:
    response = await service.client.get("/v1/nothing")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.text)["type"] == "about:blank"
