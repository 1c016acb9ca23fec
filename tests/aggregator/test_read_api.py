"""The aggregator's read API and /metrics over a real database (SQLite and PostgreSQL).

Events go in through the aggregator's own path (``consumer.decode`` of a CloudEvent as it
arrives from JetStream, then ``store.store_batch``); the board, the audit trail and the
metrics are read back over HTTP and checked field by field against numbers worked out here.
The first tests are pure: the board mapping and the metric families of a health snapshot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from services.aggregator.api import build_read_router
from services.aggregator.board import (
    kpi_list,
    milestone_counts,
    programme_view,
    proposal_detail,
    rag_value,
)
from services.aggregator.consumer import decode
from services.aggregator.db import make_engine, session_factory, upgrade
from services.aggregator.gauges import programme_gauges, render_gauges
from services.aggregator.metrics import build_metrics_router
from services.aggregator.opmetrics import OperationalMetrics
from services.aggregator.store import store_batch
from shared.catalogue import Catalogue
from shared.health import KpiObservation, MilestoneState, ProgrammeState, programme_health
from shared.kinds.milestone import MILESTONE_STATUSES
from tests.faults.checks import postgres_away

from .harness import cloudevent, js_reply

NOW = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)
PROGRAMME_START = datetime(2025, 3, 1, tzinfo=UTC)
DAY = 86400.0
NOTE = '<script>alert(\'x\')</script> {"not": "json"} -- left as sent'

# life-sciences-jobs: compound from 54,100 (2020-12-31) to 118,700 (2040-12-31). The end of
# 2024 is 1,461 of 7,305 days in, f = 0.2 exactly; 5% tolerance puts the floor near 60,141.
JOBS_EXPECTED_2024 = 54100 * (118700 / 54100) ** 0.2  # 63,306.45
# early-stage-finance: linear 150 (2024-12-31) to 300 (2027-12-31); 365 of 1,095 days by
# the end of 2025, so 150 + 150 / 3 = 200.
FINANCE_EXPECTED_2025 = 200.0


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (stream sequence, subject, event): what the column services would have published.
EVENTS = [
    (
        1,
        "cotn.events.devolution.1a.milestone",
        cloudevent(
            "gm-1",
            "greater-manchester",
            "2025-06-20T10:00:00Z",
            {"proposal": "1a", "milestone": "joint-position", "status": "completed"},
        ),
    ),
    (
        2,
        "cotn.events.collaboration.2a.milestone",
        cloudevent(
            "wy-1",
            "west-yorkshire",
            "2025-07-25T08:00:00Z",
            {"proposal": "2a", "milestone": "adoption-priorities", "status": "blocked"},
        ),
    ),
    (
        3,
        "cotn.events.devolution.1a.kpi",
        cloudevent(
            "nhsa-1",
            "nhsa",
            "2025-07-01T00:00:00Z",
            {"kpi": "life-sciences-jobs", "value": 60000, "period": "2024"},
            kind="kpi",
        ),
    ),
    (
        4,
        "cotn.events.devolution.1a.milestone",
        cloudevent(
            "gm-2",
            "greater-manchester",
            "2025-07-20T09:00:00+01:00",  # 08:00 UTC: stored and returned in UTC
            {
                "proposal": "1a",
                "milestone": "cluster-evidence",
                "status": "in_progress",
                "note": NOTE,
            },
        ),
    ),
    (
        5,
        "cotn.events.collaboration.2b.kpi",
        cloudevent(
            "ng-1",
            "northern-gritstone",
            "2025-07-30T00:00:00Z",
            {"kpi": "early-stage-finance", "value": 210, "period": "2025"},
            kind="kpi",
        ),
    ),
]
RECEIVED_DELAY = timedelta(minutes=1)
GM, WY, NG = "greater-manchester", "west-yorkshire", "northern-gritstone"


def message(seq: int, subject: str, event: dict[str, Any]) -> Any:
    """A stand-in for a JetStream message: what ``consumer.decode`` reads of one."""
    received = datetime.fromisoformat(event["time"]).astimezone(UTC) + RECEIVED_DELAY
    return SimpleNamespace(
        subject=subject, data=json.dumps(event).encode(), reply=js_reply(seq, received)
    )


def milestone_state(
    key: str, status: str, when: str, by: str, note: str | None = None
) -> MilestoneState:
    """A projected milestone state; ``key`` is ``proposal/milestone@event-id``."""
    path, event_id = key.split("@")
    proposal, milestone = path.split("/")
    return MilestoneState(proposal, milestone, status, ts(when), by, event_id, note)


def the_state() -> ProgrammeState:
    """What the projections hold after EVENTS, for the pure tests."""
    milestones = [
        milestone_state("1a/joint-position@gm-1", "completed", "2025-06-20T10:00", GM),
        milestone_state("1a/cluster-evidence@gm-2", "in_progress", "2025-07-20T08:00", GM, NOTE),
        milestone_state("2a/adoption-priorities@wy-1", "blocked", "2025-07-25T08:00", WY),
    ]
    observations = [
        KpiObservation("life-sciences-jobs", "2024", 60000, ts("2025-07-01T00:00"), "nhsa"),
        KpiObservation("early-stage-finance", "2025", 210, ts("2025-07-30T00:00"), NG),
    ]
    return ProgrammeState(
        milestones={(m.proposal, m.milestone): m for m in milestones},
        kpi_observations={o.kpi: [o] for o in observations},
    )


# --- pure: the board mapping -------------------------------------------------------------


def test_board_columns_and_proposals_follow_the_catalogue(catalogue: Catalogue) -> None:
    board = programme_view(catalogue, programme_health(catalogue, the_state(), NOW))
    assert (board.name, board.status, board.generated_at) == (
        catalogue.programme,
        catalogue.status,
        NOW,
    )
    assert [(c.id, [p.id for p in c.proposals]) for c in board.columns] == [
        ("collaboration", ["2a", "2b", "ai-cluster"]),
        ("devolution", ["1a", "prevention"]),
        ("business", ["3a", "3b"]),
    ]
    assert [k.id for k in board.kpis] == [k.id for k in catalogue.kpis]


def test_board_proposal_entry(catalogue: Catalogue) -> None:
    board = programme_view(catalogue, programme_health(catalogue, the_state(), NOW))
    p = board.columns[1].proposals[0]
    assert (p.id, p.kind, p.column, p.priority, p.rag, p.stalled) == (
        "1a",
        "proposal",
        "devolution",
        1,
        "amber",
        False,
    )
    assert p.partners == list(catalogue.proposal_by_id["1a"].partners)
    assert [(r.rule, r.rag, r.kpi) for r in p.reasons] == [
        ("kpi_off_trajectory", "amber", "life-sciences-jobs")
    ]
    assert (p.last_progress, p.has_progress) == (ts("2025-07-20T08:00"), True)
    assert p.stall_threshold_seconds == 60 * DAY
    assert p.milestone_counts == {
        "not_started": 3,
        "in_progress": 1,
        "at_risk": 0,
        "blocked": 0,
        "completed": 1,
    }
    assert (p.unfinished_milestones, p.overdue) == (4, [])
    m = p.milestones[1]
    assert (m.id, m.status, m.note, m.source, m.overdue) == (
        "cluster-evidence",
        "in_progress",
        NOTE,
        "greater-manchester",
        False,
    )


def test_milestone_counts_list_every_status(catalogue: Catalogue) -> None:
    health = programme_health(catalogue, ProgrammeState(), NOW).proposals["2b"]
    assert milestone_counts(health) == dict.fromkeys(MILESTONE_STATUSES, 0) | {"not_started": 5}


def test_proposal_detail_and_unknown_id(catalogue: Catalogue) -> None:
    health = programme_health(catalogue, the_state(), NOW)
    detail = proposal_detail(catalogue, health, "prevention")
    assert detail is not None
    assert detail.text == catalogue.proposal_by_id["prevention"].text
    assert (detail.kind, detail.priority) == ("gamechanger", None)
    assert [k.id for k in detail.kpis] == [
        "life-sciences-jobs",
        "life-sciences-gva",
        "health-research-funding-per-person",
    ]
    assert proposal_detail(catalogue, health, "9z") is None


def test_kpi_entries(catalogue: Catalogue) -> None:
    kpis = {
        k.id: k for k in kpi_list(catalogue, programme_health(catalogue, the_state(), NOW)).kpis
    }
    jobs = kpis["life-sciences-jobs"]
    assert (jobs.actual, jobs.actual_period, jobs.on_track) == (60000, "2024", False)
    assert jobs.expected_at_actual == pytest.approx(JOBS_EXPECTED_2024)
    assert (jobs.baseline.value, jobs.baseline.date) == (54100, date(2020, 12, 31))
    assert (jobs.target.value, jobs.target.date) == (118700, date(2040, 12, 31))
    finance = kpis["early-stage-finance"]
    assert (finance.actual, finance.on_track) == (210, True)
    assert finance.expected_at_actual == pytest.approx(FINANCE_EXPECTED_2025)
    gva = kpis["life-sciences-gva"]
    assert (gva.actual, gva.actual_period, gva.expected_at_actual, gva.on_track) == (
        None,
        None,
        None,
        None,
    )


def test_rag_value() -> None:
    assert [rag_value(r) for r in ("green", "amber", "red")] == [0, 1, 2]


# --- pure: metric families ---------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def named(found: dict, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


def test_metric_families_of_a_snapshot(catalogue: Catalogue) -> None:
    health = programme_health(catalogue, the_state(), NOW)
    text = render_gauges(programme_gauges(catalogue, health)).decode()
    found = samples(text)
    assert sample(found, "cotn_proposal_rag", column="devolution", proposal="1a") == 1
    assert sample(found, "cotn_kpi_value", kpi="life-sciences-jobs") == 60000
    assert "# HELP cotn_proposal_stalled 1 when the proposal" in text
    assert "# TYPE cotn_milestones gauge" in text


# --- over HTTP, on SQLite and PostgreSQL -------------------------------------------------


@dataclass
class Stack:
    client: httpx.AsyncClient
    registry: CollectorRegistry
    readiness: list[tuple[bool, str]]


def make_app(
    catalogue: Catalogue,
    sessions: Any,
    clock: Callable[[], datetime],
    registry: CollectorRegistry,
    readiness: list[tuple[bool, str]],
) -> FastAPI:
    app = FastAPI()
    app.include_router(
        build_read_router(
            catalogue=catalogue, sessions=sessions, clock=clock, ready=lambda: readiness[0]
        )
    )
    app.include_router(
        build_metrics_router(
            catalogue=catalogue,
            sessions=sessions,
            clock=clock,
            operational=OperationalMetrics(registry),
        )
    )
    return app


async def store_events(sessions: Any, catalogue: Catalogue, events: list) -> None:
    decoded = [decode(message(seq, subject, e), catalogue) for seq, subject, e in events]
    async with sessions() as session:
        await store_batch(session=session, events=decoded, recorded_at=NOW)
        await session.commit()


async def open_stack(url: str, catalogue: Catalogue) -> AsyncIterator[Stack]:
    await upgrade(url)
    engine = make_engine(url)
    try:
        await store_events(session_factory(engine, writer=True), catalogue, EVENTS)
        # A redelivery of the whole batch stores nothing new.
        await store_events(session_factory(engine, writer=True), catalogue, EVENTS)
        registry = CollectorRegistry()
        readiness = [(True, "database and bus reachable")]
        app = make_app(catalogue, session_factory(engine), lambda: NOW, registry, readiness)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as client:
            yield Stack(client, registry, readiness)
    finally:
        await engine.dispose()


@pytest.fixture
async def stack(database_url: str, catalogue: Catalogue) -> AsyncIterator[Stack]:
    async for s in open_stack(database_url, catalogue):
        yield s


@pytest.fixture
async def sqlite_stack(sqlite_url: str, catalogue: Catalogue) -> AsyncIterator[Stack]:
    async for s in open_stack(sqlite_url, catalogue):
        yield s


def proposals_of(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for c in board["columns"] for p in c["proposals"]}


def assert_problem(response: httpx.Response, status: int, *detail_parts: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert (
        body["title"]
        == {
            404: "Not Found",
            422: "Unprocessable Content",
            503: "Service Unavailable",
        }[status]
    )
    for part in detail_parts:
        assert part in body["detail"]
    return body


async def test_programme_board(stack: Stack) -> None:
    response = await stack.client.get("/v1/programme")
    assert response.status_code == 200
    board = response.json()
    assert datetime.fromisoformat(board["generated_at"]) == NOW
    assert [c["id"] for c in board["columns"]] == ["collaboration", "devolution", "business"]
    assert board["columns"][1]["title"] == "Greater devolution to Northern Places"
    proposals = proposals_of(board)

    p1a = proposals["1a"]
    assert (p1a["rag"], p1a["stalled"], p1a["kind"], p1a["priority"], p1a["title"]) == (
        "amber",
        False,
        "proposal",
        1,
        "Devolution of innovation support",
    )
    assert p1a["reasons"] == [
        {
            "rule": "kpi_off_trajectory",
            "title": "KPI off trajectory",
            "rag": "amber",
            "detail": "Jobs in the Northern life sciences sector: 60000 in 2024 against "
            "63306.4 expected",
            "milestone": None,
            "kpi": "life-sciences-jobs",
            "since": "2025-07-01T00:00:00Z",
            "events": [
                {"source": "nhsa", "id": "nhsa-1", "href": "/v1/events?source=nhsa&id=nhsa-1"}
            ],
            "chain": [],
        }
    ]
    assert datetime.fromisoformat(p1a["last_progress"]) == ts("2025-07-20T08:00")
    assert p1a["stall_threshold_seconds"] == 60 * DAY
    assert p1a["milestone_counts"] == {
        "not_started": 3,
        "in_progress": 1,
        "at_risk": 0,
        "blocked": 0,
        "completed": 1,
    }
    assert p1a["overdue"] == []
    assert "greater-manchester" in p1a["partners"]
    first, second = p1a["milestones"][:2]
    assert first == {
        "id": "joint-position",
        "title": "Joint Northern position on devolved innovation support agreed by leaders",
        "due": "2025-06-30",
        "status": "completed",
        "overdue": False,
        "overdue_beyond_grace": False,
        "updated_at": first["updated_at"],
        "source": "greater-manchester",
        "note": None,
        "event": {
            "source": "greater-manchester",
            "id": "gm-1",
            "href": "/v1/events?source=greater-manchester&id=gm-1",
        },
        "follows": [],
        "forecast": None,
        "at_risk_because_of": [],
        "verification": "unverified",  # nobody in the office has verified it
    }
    assert second["verification"] is None  # not completed
    assert datetime.fromisoformat(first["updated_at"]) == ts("2025-06-20T10:00")
    assert (second["status"], second["note"]) == ("in_progress", NOTE)

    p2a = proposals["2a"]
    assert (p2a["rag"], p2a["stalled"], p2a["overdue"]) == ("red", False, ["adoption-priorities"])
    assert [(r["rule"], r["rag"], r["milestone"]) for r in p2a["reasons"]] == [
        ("milestone_blocked", "red", "adoption-priorities"),
        ("milestone_overdue", "amber", "adoption-priorities"),
        # The campaign follows the blocked priorities (a draft dependency): at risk at once.
        ("milestone_dependency_at_risk", "amber", "campaign-launch"),
    ]
    assert p2a["reasons"][2]["chain"] == ["2a/adoption-priorities", "2a/campaign-launch"]
    assert p2a["reasons"][2]["events"][0]["id"] == "wy-1"
    # Overdue since the day after the due date.
    assert datetime.fromisoformat(p2a["reasons"][1]["since"]) == ts("2025-08-01T00:00")
    assert datetime.fromisoformat(p2a["reasons"][0]["since"]) == ts("2025-07-25T08:00")

    # Never reported: stalled, counted from the programme start.
    p2b = proposals["2b"]
    assert (p2b["rag"], p2b["stalled"], p2b["has_progress"]) == ("red", True, False)
    assert datetime.fromisoformat(p2b["last_progress"]) == PROGRAMME_START
    assert p2b["milestone_counts"]["not_started"] == 5

    kpis = {k["id"]: k for k in board["kpis"]}
    jobs = kpis["life-sciences-jobs"]
    assert (jobs["actual"], jobs["actual_period"], jobs["on_track"]) == (60000, "2024", False)
    assert jobs["expected_at_actual"] == pytest.approx(JOBS_EXPECTED_2024)
    assert jobs["baseline"] == {"value": 54100, "date": "2020-12-31"}
    assert jobs["target"] == {"value": 118700, "date": "2040-12-31"}
    assert (jobs["unit"], jobs["direction"], jobs["shape"]) == ("jobs", "up", "compound")
    assert jobs["evidences"] == ["1a", "prevention"]
    finance = kpis["early-stage-finance"]
    assert (finance["actual"], finance["on_track"]) == (210, True)
    assert finance["expected_at_actual"] == pytest.approx(FINANCE_EXPECTED_2025)
    # 2025-08-01 is 213 of 1,095 days on: 150 + 150 * 213 / 1095.
    assert finance["expected"] == pytest.approx(150 + 150 * 213 / 1095)
    assert kpis["exports"]["actual"] is None


async def test_one_proposal(stack: Stack, catalogue: Catalogue) -> None:
    response = await stack.client.get("/v1/proposals/1a")
    assert response.status_code == 200
    body = response.json()
    board_entry = proposals_of((await stack.client.get("/v1/programme")).json())["1a"]
    assert {k: v for k, v in body.items() if k in board_entry} == board_entry
    assert body["text"] == catalogue.proposal_by_id["1a"].text
    assert body["annex_text"] == catalogue.proposal_by_id["1a"].annex_text
    assert [k["id"] for k in body["kpis"]] == [
        "life-sciences-jobs",
        "life-sciences-gva",
        "private-rd-per-public-pound",
        "rd-boost-gva",
    ]


async def test_unknown_proposal_is_a_problem(stack: Stack) -> None:
    body = assert_problem(await stack.client.get("/v1/proposals/9z"), 404, "'9z'", "1a")
    assert set(body) == {"type", "title", "status", "detail"}


async def test_kpis(stack: Stack) -> None:
    body = (await stack.client.get("/v1/kpis")).json()
    assert datetime.fromisoformat(body["generated_at"]) == NOW
    board = (await stack.client.get("/v1/programme")).json()
    assert body["kpis"] == board["kpis"]


def event_ids(page: dict[str, Any]) -> list[str]:
    return [e["id"] for e in page["events"]]


async def test_events_audit_trail(stack: Stack) -> None:
    body = (await stack.client.get("/v1/events")).json()
    assert event_ids(body) == ["gm-1", "wy-1", "nhsa-1", "gm-2", "ng-1"]
    assert body["next_cursor"] is None
    gm2 = body["events"][3]
    assert datetime.fromisoformat(gm2.pop("event_time")) == ts("2025-07-20T08:00")
    assert datetime.fromisoformat(gm2.pop("received_at")) == ts("2025-07-20T08:01")
    assert gm2 == {
        "id": "gm-2",
        "source": "greater-manchester",
        "type": "org.cotn.milestone.v1",
        "column": "devolution",
        "proposal": "1a",
        "stream_seq": 4,
        "data": EVENTS[3][2]["data"],
        "extensions": None,
        "kept_aside": False,
    }


async def test_events_pages_follow_the_cursor(stack: Stack) -> None:
    pages = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await stack.client.get("/v1/events", params=params)).json()
        pages.append(event_ids(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [["gm-1", "wy-1"], ["nhsa-1", "gm-2"], ["ng-1"]]


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        pytest.param({"proposal": "1a"}, ["gm-1", "nhsa-1", "gm-2"], id="proposal"),
        pytest.param({"proposal": "3b"}, [], id="proposal-without-events"),
        pytest.param({"source": "greater-manchester"}, ["gm-1", "gm-2"], id="source"),
        pytest.param({"source": "nobody"}, [], id="unknown-source"),
        pytest.param({"type": "org.cotn.kpi.v1"}, ["nhsa-1", "ng-1"], id="type"),
        pytest.param({"since": "2025-07-20T08:00:00Z"}, ["wy-1", "gm-2", "ng-1"], id="since"),
        pytest.param(
            {"since": "2025-07-20T09:00:00+01:00"}, ["wy-1", "gm-2", "ng-1"], id="since-offset"
        ),
        pytest.param(
            {"proposal": "1a", "type": "org.cotn.milestone.v1", "since": "2025-07-01T00:00:00Z"},
            ["gm-2"],
            id="combined",
        ),
    ],
)
async def test_events_filters(stack: Stack, params: dict[str, str], ids: list[str]) -> None:
    response = await stack.client.get("/v1/events", params=params)
    assert response.status_code == 200
    assert event_ids(response.json()) == ids


async def test_events_unknown_proposal_is_404(sqlite_stack: Stack) -> None:
    response = await sqlite_stack.client.get("/v1/events", params={"proposal": "9z"})
    assert_problem(response, 404, "'9z'")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": "0"}, "limit", id="limit-zero"),
        pytest.param({"limit": "1001"}, "limit", id="limit-too-big"),
        pytest.param({"limit": "many"}, "limit", id="limit-not-a-number"),
        pytest.param({"since": "yesterday"}, "since", id="since-not-a-time"),
        # Without a timezone the instant is ambiguous: refused rather than guessed.
        pytest.param({"since": "2025-07-01T00:00:00"}, "since", id="since-naive"),
        pytest.param({"type": "org.cotn.other.v1"}, "type", id="unknown-type"),
        pytest.param({"cursor": "not-a-cursor"}, "cursor", id="foreign-cursor"),
    ],
)
async def test_events_bad_query_is_422(
    sqlite_stack: Stack, params: dict[str, str], field: str
) -> None:
    response = await sqlite_stack.client.get("/v1/events", params=params)
    body = assert_problem(response, 422, field)
    assert [e["field"] for e in body["errors"]] == [field]


async def test_metrics(stack: Stack, catalogue: Catalogue) -> None:
    Counter("cotn_test_scrapes", "An operational counter", registry=stack.registry).inc()
    response = await stack.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    assert sample(found, "cotn_test_scrapes_total") == 1

    def proposal(name: str, pid: str, **labels: str) -> float:
        return sample(found, name, column=catalogue.column_of[pid], proposal=pid, **labels)

    assert proposal("cotn_proposal_rag", "1a") == 1
    assert proposal("cotn_proposal_rag", "2a") == 2
    assert proposal("cotn_proposal_stalled", "1a") == 0
    assert proposal("cotn_proposal_stalled", "2b") == 1
    assert proposal("cotn_proposal_last_progress_timestamp_seconds", "1a") == (
        ts("2025-07-20T08:00").timestamp()
    )
    assert proposal("cotn_proposal_last_progress_timestamp_seconds", "2b") == (
        PROGRAMME_START.timestamp()
    )
    assert proposal("cotn_proposal_stall_threshold_seconds", "1a") == 60 * DAY
    assert proposal("cotn_proposal_stall_threshold_seconds", "2a") == 45 * DAY
    assert proposal("cotn_proposal_unfinished_milestones", "1a") == 4
    assert proposal("cotn_proposal_unfinished_milestones", "2b") == 5
    assert {
        status: proposal("cotn_milestones", "1a", status=status) for status in MILESTONE_STATUSES
    } == {"not_started": 3, "in_progress": 1, "at_risk": 0, "blocked": 0, "completed": 1}
    assert len(named(found, "cotn_milestones")) == len(catalogue.proposals) * len(
        MILESTONE_STATUSES
    )
    overdue = named(found, "cotn_milestone_overdue")
    assert len(overdue) == sum(len(p.milestones) for p in catalogue.proposals)
    assert proposal("cotn_milestone_overdue", "2a", milestone="adoption-priorities") == 1
    assert proposal("cotn_milestone_overdue", "1a", milestone="joint-position") == 0
    # 3b's first milestone (due 2025-06-30) was never reported either.
    assert proposal("cotn_milestone_overdue", "3b", milestone="network-terms") == 1
    ai_title = catalogue.proposal_by_id["ai-cluster"].title
    assert proposal("cotn_proposal_info", "ai-cluster", title=ai_title, kind="gamechanger") == 1

    assert named(found, "cotn_kpi_value") == {
        frozenset({("kpi", "life-sciences-jobs")}): 60000,
        frozenset({("kpi", "early-stage-finance")}): 210,
    }
    assert named(found, "cotn_kpi_off_trajectory") == {
        frozenset({("kpi", "life-sciences-jobs")}): 1,
        frozenset({("kpi", "early-stage-finance")}): 0,
    }
    assert sample(found, "cotn_kpi_expected", kpi="early-stage-finance") == pytest.approx(
        150 + 150 * 213 / 1095
    )
    assert sample(found, "cotn_kpi_target", kpi="life-sciences-jobs") == 118700
    assert len(named(found, "cotn_kpi_expected")) == len(catalogue.kpis)
    assert len(named(found, "cotn_kpi_target")) == len(catalogue.kpis)
    # Which columns a KPI alert goes to: one series per proposal the KPI evidences.
    evidence = named(found, "cotn_kpi_evidence")
    assert set(evidence.values()) == {1}
    assert {dict(labels)["column"] for labels in evidence if ("kpi", "rd-boost-gva") in labels} == {
        "devolution",
        "business",
    }
    assert len(evidence) == sum(len(k.evidences) for k in catalogue.kpis)


@pytest.mark.postgres
async def test_database_away_is_503_on_the_board_and_the_last_read_on_metrics(
    pg_url: str, catalogue: Catalogue
) -> None:
    async for stack in open_stack(pg_url, catalogue):
        before = samples((await stack.client.get("/metrics")).text)
        assert sample(before, "cotn_aggregator_database_up") == 1
        async with postgres_away(pg_url):
            for path in ("/v1/programme", "/v1/proposals/1a", "/v1/kpis", "/v1/events"):
                response = await stack.client.get(path)
                assert_problem(response, 503, "the database is not answering")
                assert response.headers["Retry-After"] == "5"
                assert "SELECT" not in response.text and "127.0.0.1" not in response.text
            # A scrape still succeeds: the database down, the programme as last read.
            scrape = await stack.client.get("/metrics")
            assert scrape.status_code == 200
            during = samples(scrape.text)
            assert sample(during, "cotn_aggregator_database_up") == 0
            assert named(during, "cotn_proposal_stalled") == named(before, "cotn_proposal_stalled")
            assert len(during) == len(before)
        # The pool's connections were cut: the next read reconnects.
        assert (await stack.client.get("/v1/programme")).status_code == 200
        after = samples((await stack.client.get("/metrics")).text)
        assert sample(after, "cotn_aggregator_database_up") == 1
        assert after == before


async def test_stall_alert_expression_agrees_with_stalled(stack: Stack) -> None:
    """The alert ``time() - last_progress > threshold`` says what cotn_proposal_stalled says."""
    found = samples((await stack.client.get("/metrics")).text)
    last = named(found, "cotn_proposal_last_progress_timestamp_seconds")
    threshold = named(found, "cotn_proposal_stall_threshold_seconds")
    unfinished = named(found, "cotn_proposal_unfinished_milestones")
    stalled = named(found, "cotn_proposal_stalled")
    assert set(stalled) == set(last) == set(threshold)
    for labels, value in stalled.items():
        alert = unfinished[labels] > 0 and NOW.timestamp() - last[labels] > threshold[labels]
        assert bool(value) is alert, labels


async def test_metrics_and_board_agree(stack: Stack) -> None:
    board = (await stack.client.get("/v1/programme")).json()
    found = samples((await stack.client.get("/metrics")).text)
    for column in board["columns"]:
        for p in column["proposals"]:
            labels = {"column": column["id"], "proposal": p["id"]}
            assert sample(found, "cotn_proposal_rag", **labels) == rag_value(p["rag"])
            assert sample(found, "cotn_proposal_stalled", **labels) == int(p["stalled"])


async def test_health_and_readiness(sqlite_stack: Stack) -> None:
    client = sqlite_stack.client
    healthz = await client.get("/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "detail": "database and bus reachable"},
    )
    sqlite_stack.readiness[0] = (False, "bus not connected")
    not_ready = await client.get("/readyz")
    assert (not_ready.status_code, not_ready.json()) == (
        503,
        {"status": "not_ready", "detail": "bus not connected"},
    )


async def test_openapi_documents_the_read_api(sqlite_stack: Stack) -> None:
    doc = (await sqlite_stack.client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert {"/v1/programme", "/v1/proposals/{proposal_id}", "/v1/kpis", "/v1/events"} <= set(paths)

    def schema_of(path: str, status: str = "200") -> dict[str, Any]:
        return paths[path]["get"]["responses"][status]["content"]

    assert schema_of("/v1/programme")["application/json"]["schema"]["$ref"].endswith(
        "/ProgrammeOut"
    )
    assert schema_of("/v1/proposals/{proposal_id}", "404")["application/problem+json"]
    assert schema_of("/v1/events", "422")["application/problem+json"]
    params = {p["name"] for p in paths["/v1/events"]["get"]["parameters"]}
    assert params == {
        "proposal",
        "source",
        "type",
        "since",
        "until",
        "milestone",
        "kpi",
        "id",
        "cursor",
        "limit",
    }
    assert "ProposalOut" in doc["components"]["schemas"]


async def test_readiness_may_be_a_coroutine(catalogue: Catalogue) -> None:
    async def ready() -> tuple[bool, str]:
        return False, "database unreachable"

    unused: Any = None  # /readyz never opens a session
    app = FastAPI()
    app.include_router(
        build_read_router(catalogue=catalogue, sessions=unused, clock=lambda: NOW, ready=ready)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as client:
        response = await client.get("/readyz")
    assert (response.status_code, response.json()["detail"]) == (503, "database unreachable")
