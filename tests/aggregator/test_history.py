"""History over a real database (SQLite and PostgreSQL): as_at, known_at, changes, a
proposal's timeline, a KPI's series, the audit trail's new filters and unknown parameters.

Events go in through the aggregator's own path (``consumer.decode`` of a message as it
arrives from JetStream, then ``store.store_batch``), each with the time JetStream stored it
(``received_at``) chosen here, so a late backfill can be told from what was known before.
The pipeline tests through a real nats-server are in ``test_history_pipeline.py``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.aggregator.api import build_read_router
from services.aggregator.consumer import decode
from services.aggregator.db import make_engine, session_factory, upgrade
from services.aggregator.metrics import build_metrics_router
from services.aggregator.opmetrics import OperationalMetrics
from services.aggregator.store import store_batch
from shared.catalogue import Catalogue

from .harness import FakeClock, cloudevent, js_reply

GM = "greater-manchester"
NOW = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def ms(event_id: str, time: str, proposal: str, milestone: str, status: str) -> dict[str, Any]:
    return cloudevent(
        event_id, GM, time, {"proposal": proposal, "milestone": milestone, "status": status}
    )


def report(event_id: str, time: str, kpi: str, value: float, period: str) -> dict[str, Any]:
    data = {"kpi": kpi, "value": value, "period": period}
    return cloudevent(event_id, "nhsa", time, data, kind="kpi")


# (stream sequence, subject, event, when JetStream stored it)
TIMELINE = [
    (
        1,
        "cotn.events.devolution.1a.milestone",
        ms("a1", "2025-06-01T09:00:00Z", "1a", "joint-position", "in_progress"),
        ts("2025-06-01T09:00:05"),
    ),
    (
        2,
        "cotn.events.devolution.1a.kpi",
        report("k1", "2025-07-01T00:00:00Z", "life-sciences-jobs", 60000, "2024"),
        ts("2025-07-01T00:00:05"),
    ),
    (
        3,
        "cotn.events.devolution.1a.milestone",
        ms("a2", "2025-07-10T09:00:00Z", "1a", "cluster-evidence", "in_progress"),
        ts("2025-07-10T09:00:05"),
    ),
    # A correction of the 2024 return: now on its trajectory.
    (
        4,
        "cotn.events.devolution.1a.kpi",
        report("k2", "2025-07-15T00:00:00Z", "life-sciences-jobs", 64000, "2024"),
        ts("2025-07-15T00:00:05"),
    ),
    # The backfill: the position was agreed on 20 June, but the system sent it on 20 August.
    (
        5,
        "cotn.events.devolution.1a.milestone",
        ms("late", "2025-06-20T10:00:00Z", "1a", "joint-position", "completed"),
        ts("2025-08-20T10:00:00"),
    ),
]
BEFORE_BACKFILL = ts("2025-08-19T00:00")


def message(seq: int, subject: str, body: dict[str, Any], received: datetime) -> Any:
    """A stand-in for a JetStream message stored at ``received``."""
    return SimpleNamespace(
        subject=subject, data=json.dumps(body).encode(), reply=js_reply(seq, received)
    )


@pytest.fixture
async def client(database_url: str, catalogue: Catalogue) -> AsyncIterator[httpx.AsyncClient]:
    await upgrade(database_url)
    engine = make_engine(database_url)
    try:
        decoded = [decode(message(*row), catalogue) for row in TIMELINE]
        async with session_factory(engine, writer=True)() as session:
            await store_batch(session=session, events=decoded, recorded_at=NOW)
            await session.commit()
        sessions = session_factory(engine)
        clock = FakeClock(NOW)
        app = FastAPI()
        app.include_router(
            build_read_router(
                catalogue=catalogue, sessions=sessions, clock=clock, ready=lambda: (True, "")
            )
        )
        app.include_router(
            build_metrics_router(
                catalogue=catalogue,
                sessions=sessions,
                clock=clock,
                operational=OperationalMetrics(CollectorRegistry()),
            )
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as c:
            yield c
    finally:
        await engine.dispose()


def proposal_of(board: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for c in board["columns"] for p in c["proposals"] if p["id"] == pid)


def milestone_of(proposal: dict[str, Any], mid: str) -> dict[str, Any]:
    return next(m for m in proposal["milestones"] if m["id"] == mid)


async def get_ok(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_late_backfill_changes_as_at_but_not_known_at(client: httpx.AsyncClient) -> None:
    day = z(BEFORE_BACKFILL)
    as_at = await get_ok(client, "/v1/programme", as_at=day)
    known = await get_ok(client, "/v1/programme", known_at=day)
    both = await get_ok(client, "/v1/programme", as_at=day, known_at=day)
    # The answer says which board it is, and is rated at that instant.
    assert (as_at["as_at"], as_at["known_at"]) == ("2025-08-19T00:00:00Z", None)
    assert (known["as_at"], known["known_at"]) == (None, "2025-08-19T00:00:00Z")
    assert both["as_at"] == both["known_at"] == "2025-08-19T00:00:00Z"
    assert as_at["generated_at"] == known["generated_at"] == "2025-08-19T00:00:00Z"

    assert milestone_of(proposal_of(as_at, "1a"), "joint-position")["status"] == "completed"
    for board in (known, both):
        position = milestone_of(proposal_of(board, "1a"), "joint-position")
        assert (position["status"], position["overdue"]) == ("in_progress", True)
        reasons = {r["rule"]: r for r in proposal_of(board, "1a")["reasons"]}
        # Overdue since the day after the due date (30 June), naming the event behind it.
        overdue = reasons["milestone_overdue_beyond_grace"]
        assert overdue["since"] == "2025-07-15T00:00:00Z"  # 1 July + 14 days' grace
        assert overdue["events"] == [
            {"source": GM, "id": "a1", "href": "/v1/events?source=greater-manchester&id=a1"}
        ]
    # Once it had arrived, known_at sees it too.
    later = await get_ok(client, "/v1/programme", known_at="2025-08-21T00:00:00Z")
    assert milestone_of(proposal_of(later, "1a"), "joint-position")["status"] == "completed"
    # The live board and as at now agree.
    live = await get_ok(client, "/v1/programme")
    now = await get_ok(client, "/v1/programme", as_at=z(NOW))
    assert {k: v for k, v in live.items() if k not in ("as_at", "known_at")} == {
        k: v for k, v in now.items() if k not in ("as_at", "known_at")
    }


async def test_as_at_before_anything_is_the_empty_board(client: httpx.AsyncClient) -> None:
    board = await get_ok(client, "/v1/programme", as_at="2025-03-02T00:00:00Z")
    p1a = proposal_of(board, "1a")
    assert (p1a["rag"], p1a["has_progress"]) == ("green", False)
    assert all(k["actual"] is None for k in board["kpis"])


async def test_proposal_and_kpis_take_the_view(client: httpx.AsyncClient) -> None:
    day = "2025-07-12T00:00:00Z"
    detail = await get_ok(client, "/v1/proposals/1a", as_at=day)
    assert (detail["as_at"], detail["generated_at"]) == (day, day)
    jobs = next(k for k in detail["kpis"] if k["id"] == "life-sciences-jobs")
    # Before the correction: 60,000 is off the 2024 trajectory (63,306 expected).
    assert (jobs["actual"], jobs["on_track"]) == (60000, False)
    kpis = await get_ok(client, "/v1/kpis", as_at=day)
    assert next(k for k in kpis["kpis"] if k["id"] == "life-sciences-jobs")["actual"] == 60000
    live = await get_ok(client, "/v1/kpis")
    assert next(k for k in live["kpis"] if k["id"] == "life-sciences-jobs")["actual"] == 64000
    assert (live["as_at"], live["known_at"]) == (None, None)


async def test_kpi_series_has_every_period_and_correction(client: httpx.AsyncClient) -> None:
    body = await get_ok(client, "/v1/kpis/life-sciences-jobs")
    assert (body["actual"], body["actual_period"], body["on_track"]) == (64000, "2024", True)
    (period,) = body["periods"]
    assert (period["period"], period["period_end"], period["actual"]) == (
        "2024",
        "2024-12-31",
        64000,
    )
    assert (period["source"], period["event"]["id"], period["on_track"]) == ("nhsa", "k2", True)
    assert period["expected"] == pytest.approx(54100 * (118700 / 54100) ** 0.2)
    assert [(r["value"], r["event"]["id"]) for r in period["reports"]] == [
        (60000, "k1"),
        (64000, "k2"),
    ]
    trajectory = body["trajectory"]
    assert trajectory[0] == {"date": "2020-12-31", "value": 54100}
    assert trajectory[-1] == {"date": "2040-12-31", "value": pytest.approx(118700)}
    assert len(trajectory) == 21
    # As at a day before the correction: one report only.
    before = await get_ok(client, "/v1/kpis/life-sciences-jobs", as_at="2025-07-12T00:00:00Z")
    assert [r["value"] for r in before["periods"][0]["reports"]] == [60000]
    missing = await client.get("/v1/kpis/no-such-kpi")
    assert missing.status_code == 404


async def test_history_has_event_and_clock_changes(client: httpx.AsyncClient) -> None:
    body = await get_ok(client, "/v1/proposals/1a/history")
    entries = body["entries"]
    assert (body["proposal"], body["column"]) == ("1a", "devolution")
    timeline = [(e["at"], e["cause"], e["rag"], e["stalled"], e["changed"]) for e in entries]
    assert timeline[0] == ("2025-03-01T00:00:00Z", "clock", "green", False, [])
    # The clock alone: half the 60-day threshold passes without progress (amber), then it
    # stalls (red), until the first event on 1 June.
    assert timeline[1][:4] == ("2025-03-31T00:00:00.000001Z", "clock", "amber", False)
    assert timeline[2][:4] == ("2025-04-30T00:00:00.000001Z", "clock", "red", True)
    assert timeline[3] == ("2025-06-01T09:00:00Z", "event", "green", False, ["rag", "stalled"])
    assert entries[3]["events"][0]["id"] == "a1"
    # The KPI return off its trajectory (amber), corrected later (green): events of the KPI.
    by_time = {e["at"]: e for e in entries}
    assert by_time["2025-07-01T00:00:00Z"]["rag"] == "amber"
    assert by_time["2025-07-01T00:00:00Z"]["events"][0]["id"] == "k1"
    # The backfill put the completion on 20 June: never overdue in the history as now known.
    assert all("joint-position" not in e["overdue"] for e in entries)
    # Each entry differs from the one before.
    keys = [(e["rag"], e["stalled"], e["overdue"]) for e in entries]
    assert all(a != b for a, b in itertools.pairwise(keys))
    # As known before the backfill: the position went overdue on 1 July, by the clock.
    known = await get_ok(client, "/v1/proposals/1a/history", known_at=z(BEFORE_BACKFILL))
    overdue = [e for e in known["entries"] if "joint-position" in e["overdue"]]
    assert overdue[0]["at"] == "2025-07-01T00:00:00Z"
    assert overdue[0]["cause"] in ("clock", "event")  # the KPI return shares the instant
    assert "overdue" in overdue[0]["changed"]


async def test_changes_between_two_instants(client: httpx.AsyncClient) -> None:
    body = await get_ok(
        client, "/v1/changes", **{"from": "2025-07-12T00:00:00Z", "to": "2025-07-20T00:00:00Z"}
    )
    assert (body["from"], body["to"]) == ("2025-07-12T00:00:00Z", "2025-07-20T00:00:00Z")
    (jobs,) = body["kpis"]
    assert jobs["id"] == "life-sciences-jobs"
    assert (jobs["before"]["on_track"], jobs["after"]["on_track"]) == (False, True)
    assert (jobs["before"]["actual"], jobs["after"]["actual"]) == (60000, 64000)
    # The proposals it evidences change with it; nothing else changed rating that week.
    # (prevention, which it evidences too, is stalled: red before and after)
    assert [p["id"] for p in body["proposals"]] == ["1a"]
    p1a = body["proposals"][0]
    assert (p1a["before"]["rag"], p1a["after"]["rag"]) == ("amber", "green")
    assert [r["rule"] for r in p1a["before"]["reasons"]] == ["kpi_off_trajectory"]
    assert p1a["before"]["reasons"][0]["events"][0]["id"] == "k1"
    year = await get_ok(client, "/v1/changes", **{"from": "2025-03-01T00:00:00Z"})
    change = next(p for p in year["proposals"] if p["id"] == "1a")
    assert change["before"] == {"rag": "green", "stalled": False, "overdue": [], "reasons": []}
    assert change["after"]["rag"] != "green"
    assert {r["rule"] for r in change["after"]["reasons"]} >= {"progress_ageing"}


async def test_audit_trail_until_kpi_milestone_and_id(client: httpx.AsyncClient) -> None:
    async def ids(**params: str) -> list[str]:
        return [e["id"] for e in (await get_ok(client, "/v1/events", **params))["events"]]

    assert await ids(kpi="life-sciences-jobs") == ["k1", "k2"]
    assert await ids(milestone="joint-position") == ["a1", "late"]
    assert await ids(until="2025-06-30T00:00:00Z") == ["a1", "late"]
    assert await ids(since="2025-07-01T00:00:00Z", until="2025-07-10T09:00:00Z") == ["k1", "a2"]
    assert await ids(source=GM, id="late") == ["late"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/programme",
        "/v1/proposals/1a",
        "/v1/proposals/1a/history",
        "/v1/changes?from=2025-07-01T00:00:00Z",
        "/v1/kpis",
        "/v1/kpis/exports",
        "/v1/events",
        "/metrics",
        "/healthz",
        "/readyz",
    ],
)
async def test_unknown_query_parameters_are_refused(client: httpx.AsyncClient, path: str) -> None:
    joiner = "&" if "?" in path else "?"
    response = await client.get(f"{path}{joiner}at=2026-03-01&colour=red")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["detail"] == "unknown query parameter: at, colour"
    assert [e["field"] for e in body["errors"]] == ["at", "colour"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/programme", {"as_at": "2026-03-01"}, "as_at"),
        ("/v1/programme", {"as_at": "yesterday"}, "as_at"),
        ("/v1/programme", {"as_at": "2025-09-01T12:00:01Z"}, "as_at"),
        ("/v1/programme", {"known_at": "2030-01-01T00:00:00Z"}, "known_at"),
        ("/v1/proposals/1a", {"as_at": "2030-01-01T00:00:00Z"}, "as_at"),
        ("/v1/kpis", {"known_at": "not a time"}, "known_at"),
        ("/v1/kpis/exports", {"as_at": "2030-01-01T00:00:00Z"}, "as_at"),
        ("/v1/proposals/1a/history", {"as_at": "2030-01-01T00:00:00Z"}, "as_at"),
        ("/v1/changes", {}, "from"),
        ("/v1/changes", {"from": "2025-08-01T00:00:00Z", "to": "2025-07-01T00:00:00Z"}, "from"),
        ("/v1/changes", {"from": "2025-08-01T00:00:00Z", "to": "2030-07-01T00:00:00Z"}, "to"),
        ("/v1/events", {"until": "2025-08-01"}, "until"),
    ],
)
async def test_bad_instants_are_refused_naming_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_as_at_reads_only_one_row_per_key(client: httpx.AsyncClient) -> None:
    """Sanity of the as-at statement: every milestone at most once, the newest up to it."""
    board = await get_ok(client, "/v1/programme", as_at="2025-07-11T00:00:00Z")
    p1a = proposal_of(board, "1a")
    assert [m["status"] for m in p1a["milestones"]][:2] == ["completed", "in_progress"]
    assert milestone_of(p1a, "joint-position")["event"]["id"] == "late"
    assert milestone_of(p1a, "cluster-evidence")["updated_at"] == "2025-07-10T09:00:00Z"


def test_timedelta_is_never_shown() -> None:
    """The stall reason is plain words (no Python timedelta)."""
    from shared.catalogue import load_catalogue
    from shared.health import ProgrammeState, programme_health

    health = programme_health(load_catalogue(), ProgrammeState(), NOW + timedelta(days=300))
    stalled = next(r for r in health.proposals["2a"].reasons if r.rule == "stalled")
    assert stalled.detail == "no milestone event for 484 days, stall threshold 45 days"
