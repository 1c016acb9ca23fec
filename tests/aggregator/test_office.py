"""The office's API over real NATS and a real database (SQLite and PostgreSQL): the review
queue, reviews with their locks, and completeness of returns.

Events reach the stream as a column service publishes them; reviews go through
``POST /v1/reviews``, which publishes them to the same stream and puts or deletes the lock
in the bucket the column services watch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.errors import KeyNotFoundError

from services.aggregator.app import create_app
from services.aggregator.office import NatsReviewBus
from shared.natsserver import NatsServer
from shared.periods import period_of
from shared.reviews import LOCKS_BUCKET, Lock
from shared.tokens import TokenStore

from .harness import Bus, Database, eventually, kpi, milestone, settings_for

TARGET = "kpi.rd-boost-gva.2025-Q1.np11"


@dataclass
class Office:
    client: httpx.AsyncClient
    office: dict[str, str]
    np11: dict[str, str]
    member: dict[str, str]

    async def review(self, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/reviews", json=body, headers=self.office if headers is None else headers
        )

    async def queue(self, **params: str) -> dict[str, Any]:
        answer = await self.client.get("/v1/reviews", params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def office_at(nats_url: str, database_url: str, data_dir: Path) -> AsyncIterator[Office]:
    tokens = TokenStore.in_dir(data_dir)
    office, _ = tokens.create_office("alice")
    np11, _ = tokens.create("np11")
    member, _ = tokens.create_office("bob", member_of="np11")
    app = create_app(settings_for(nats_url, database_url, data_dir=data_dir))
    async with app.router.lifespan_context(app):
        await eventually(
            lambda: _consuming(app.state.aggregator), "the aggregator to consume", within=30
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg") as client:
            yield Office(client, bearer(office), bearer(np11), bearer(member))


async def _consuming(aggregator: Any) -> bool:
    return bool(aggregator.consuming.is_set())


@pytest.fixture
async def office(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path
) -> AsyncIterator[Office]:
    async with office_at(fresh_nats.url, database_url, tmp_path) as o:
        yield o


def fields(answer: httpx.Response) -> list[str]:
    return [e["field"] for e in answer.json().get("errors", [])]


async def lock_in_bucket(bus: Bus, target: str) -> Lock | None:
    kv = await bus.js.key_value(LOCKS_BUCKET)
    try:
        entry = await kv.get(target)
    except KeyNotFoundError:
        return None
    return Lock.decode(entry.value) if entry.value else None


APPROVE = {"action": "approve", "kpi": "rd-boost-gva", "period": "2025-Q1", "reporter": "np11"}


async def test_a_kpi_return_is_approved_locked_kept_aside_reopened_and_returned(
    office: Office, bus: Bus, db: Database
) -> None:
    await bus.publish(kpi("q1", "rd-boost-gva", 1.5, "2025-Q1"))
    await eventually(lambda: db.has_events(1), "the return")
    queue = await office.queue()
    assert [r["target"] for r in queue["waiting"]] == [TARGET]
    assert queue["waiting"][0]["event"] == {"source": "np11", "id": "q1"}

    approved = await office.review(**APPROVE)
    assert approved.status_code == 201, approved.text
    body = approved.json()
    assert (body["state"], body["stored"]) == ("approved", True)
    assert body["review"]["by"] == "office/alice"
    assert body["lock"].startswith(f"{TARGET} was approved by office/alice at ")
    lock = await lock_in_bucket(bus, TARGET)
    assert lock is not None and (lock.by, lock.action) == ("office/alice", "approve")

    # Approving twice is idempotent: the same answer, nothing new on the stream.
    again = await office.review(**APPROVE)
    assert again.status_code == 200 and again.json()["review"] == body["review"]
    assert len(await db.events(type="org.cotn.review.v1")) == 1
    queue = await office.queue()
    assert queue["counts"] == {"waiting": 0, "returned": 0, "kept_aside": 0}

    # An event its column service accepted before the lock reached it: kept aside.
    await bus.publish(kpi("q1-late", "rd-boost-gva", 9.0, "2025-Q1"))
    queue = await eventually(lambda: _with_kept_aside(office), "the late event to be kept aside")
    aside = queue["kept_aside"][0]
    assert aside["event"] == {"source": "np11", "id": "q1-late"}
    assert aside["lock"]["event"] == body["review"]["event"]
    kpis = (await office.client.get("/v1/kpis/rd-boost-gva")).json()
    assert [p["actual"] for p in kpis["periods"]] == [1.5]
    assert kpis["periods"][0]["approved"] is True
    # The audit trail has it, marked as kept aside, after the approval (an event too).
    trail = (await office.client.get("/v1/events", params={"kpi": "rd-boost-gva"})).json()
    assert [(e["id"], e["kept_aside"]) for e in trail["events"]] == [
        ("q1", False),
        (body["review"]["event"]["id"], False),
        ("q1-late", True),
    ]

    # Approved: returning it needs a reopen first.
    refused = await office.review(
        action="return", kpi="rd-boost-gva", period="2025-Q1", reporter="np11", reason="typo"
    )
    assert refused.status_code == 409 and fields(refused) == ["period"]

    reopened = await office.review(
        action="reopen",
        kpi="rd-boost-gva",
        period="2025-Q1",
        reporter="np11",
        reason="np11 found an error in the source data",
    )
    assert reopened.status_code == 201 and reopened.json()["state"] == "submitted"
    assert await lock_in_bucket(bus, TARGET) is None

    returned = await office.review(
        action="return",
        kpi="rd-boost-gva",
        period="2025-Q1",
        reporter="np11",
        reason="Please send the value in GBP bn, not GBP m",
    )
    assert returned.status_code == 201 and returned.json()["state"] == "returned"
    queue = await office.queue()
    assert [r["target"] for r in queue["returned"]] == [TARGET]
    assert queue["returned"][0]["review"]["reason"] == "Please send the value in GBP bn, not GBP m"
    # The authority sees why.
    mine = (await office.client.get("/v1/reporting/np11")).json()
    assert [r["review"]["reason"] for r in mine["returned"]] == [
        "Please send the value in GBP bn, not GBP m"
    ]

    # A resubmission after a return is submitted again.
    await bus.publish(kpi("q1-fixed", "rd-boost-gva", 1.6, "2025-Q1"))
    queue = await eventually(lambda: _waiting(office), "the resubmission to wait for review")
    assert queue["waiting"][0]["event"]["id"] == "q1-fixed"


async def _with_kept_aside(office: Office) -> dict[str, Any] | None:
    queue = await office.queue()
    return queue if queue["kept_aside"] else None


async def _waiting(office: Office) -> dict[str, Any] | None:
    queue = await office.queue()
    return queue if queue["waiting"] else None


async def test_a_completion_is_verified_and_locked(office: Office, bus: Bus, db: Database) -> None:
    await bus.publish(milestone("done", "1a", "joint-position", "completed"))
    await bus.publish(milestone("going", "1a", "cluster-evidence", "in_progress"))
    await eventually(lambda: db.has_events(2), "the milestones")
    queue = await office.queue(kind="milestone")
    assert [r["target"] for r in queue["waiting"]] == ["milestone.1a.joint-position"]
    verify = {"action": "verify", "proposal": "1a", "milestone": "joint-position"}
    answer = await office.review(**verify)
    assert answer.status_code == 201 and answer.json()["state"] == "verified"
    lock = await lock_in_bucket(bus, "milestone.1a.joint-position")
    assert lock is not None and lock.action == "verify"
    # A milestone not completed has nothing to verify.
    answer = await office.review(action="verify", proposal="1a", milestone="cluster-evidence")
    assert answer.status_code == 422 and fields(answer) == ["milestone"]


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({**APPROVE, "kpi": "no-such-kpi"}, 422, ["kpi"]),
        ({**APPROVE, "period": "2025-Q2"}, 422, ["period"]),  # nothing received for Q2
        ({**APPROVE, "period": "2025-02"}, 422, ["period"]),  # the KPI is quarterly
        ({**APPROVE, "period": "Q1"}, 422, ["period"]),
        ({**APPROVE, "reporter": "cumbria"}, 422, ["reporter"]),
        ({**APPROVE, "action": "return"}, 422, ["reason"]),
        ({**APPROVE, "action": "reopen", "reason": "  "}, 422, ["reason"]),
        ({**APPROVE, "action": "verify"}, 422, ["action"]),
        ({"action": "approve", "kpi": "rd-boost-gva"}, 422, ["period", "reporter"]),
        ({**APPROVE, "proposal": "1a"}, 422, ["(body)"]),
        ({**APPROVE, "colour": "red"}, 422, ["colour"]),
        ({**APPROVE, "action": "reopen", "reason": "why"}, 409, ["period"]),  # not approved
    ],
)
async def test_a_bad_review_is_refused_naming_the_field_and_nothing_is_stored(
    office: Office,
    bus: Bus,
    db: Database,
    body: dict[str, Any],
    status: int,
    named: list[str],
) -> None:
    await bus.publish(kpi("q1", "rd-boost-gva", 1.5, "2025-Q1"))
    await eventually(lambda: db.has_events(1), "the return")
    answer = await office.review(**body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert fields(answer) == named
    assert await db.events(type="org.cotn.review.v1") == []
    assert await lock_in_bucket(bus, TARGET) is None


async def test_only_an_office_token_reviews_and_never_its_own_authoritys_return(
    office: Office, bus: Bus, db: Database
) -> None:
    await bus.publish(kpi("q1", "rd-boost-gva", 1.5, "2025-Q1"))
    await eventually(lambda: db.has_events(1), "the return")
    assert (await office.review(headers={}, **APPROVE)).status_code == 401
    refused = await office.review(headers=office.np11, **APPROVE)
    assert refused.status_code == 403 and fields(refused) == ["Authorization"]
    own = await office.review(headers=office.member, **APPROVE)
    assert own.status_code == 403 and fields(own) == ["reporter"]
    assert await db.events(type="org.cotn.review.v1") == []


async def test_completeness_and_silent_reporters_by_when_returns_were_received(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path, bus: Bus, db: Database
) -> None:
    now = datetime.now(UTC)
    quarter = period_of(now.date(), "quarterly")
    async with office_at(fresh_nats.url, database_url, tmp_path) as office:
        # A Q1 2025 return received now: long past its due day, so late, whatever its time.
        await bus.publish(kpi("q1", "rd-boost-gva", 1.5, "2025-Q1"))
        # A progress update for this quarter from 2b's lead: pending until due, received.
        await bus.publish(
            milestone(
                "gap", "2b", "finance-gap-analysis", "in_progress", now, source="northern-gritstone"
            )
        )
        await eventually(lambda: db.has_events(2), "the returns")
        answer = await office.client.get("/v1/reporting", params={"authority": "np11"})
        assert answer.status_code == 200, answer.text
        rows = {r["period"]: r for r in answer.json()["completeness"]}
        q1 = rows["2025-Q1"]
        # np11 owes 5 KPIs' returns and 3b's progress update each quarter; one came in, late.
        assert (q1["expected"], q1["late"], q1["on_time"], q1["missing"]) == (6, 1, 0, 5)
        assert q1["completeness"] == pytest.approx(1 / 6) and q1["timeliness"] == 0.0
        assert all(r["completeness"] is None or r["completeness"] <= 1 for r in rows.values())
        silent = answer.json()["silent"]
        assert {(s["kind"], s["obligation"]) for s in silent} == {
            ("kpi", "life-sciences-jobs"), ("kpi", "life-sciences-gva"),
            ("kpi", "private-rd-per-public-pound"), ("kpi", "rd-boost-gva"), ("kpi", "exports"),
            ("update", "3b"),
        }  # fmt: skip
        # A return of 2025-Q1 does not end the silence: the newest due ones are missing.
        boost = next(s for s in silent if s["obligation"] == "rd-boost-gva")
        assert boost["periods"][0] == "2025-Q2" and boost["since"] == "2025-07-30"

        lead = (await office.client.get("/v1/reporting/northern-gritstone")).json()
        rows = {r["period"]: r for r in lead["completeness"]}
        assert (rows[quarter]["on_time"], rows[quarter]["pending"]) == (1, 1)  # 2b's update
        assert [(o["kind"], o["obligation"]) for o in lead["next"]] == [
            ("kpi", "early-stage-finance")
        ]
        assert lead["missing"] and all(o["state"] == "missing" for o in lead["missing"])
        assert lead["late"] == []

        for params, named in (
            ({"authority": "nowhere"}, "authority"),
            ({"column": "nowhere"}, "column"),
            ({"period": "2025-13"}, "period"),
            ({"colour": "red"}, "colour"),
        ):
            answer = await office.client.get("/v1/reporting", params=params)
            assert answer.status_code == 422 and fields(answer) == [named], params
        assert (await office.client.get("/v1/reporting/nowhere")).status_code == 404


async def test_a_lock_the_bus_did_not_take_is_set_when_the_review_is_sent_again(
    office: Office, bus: Bus, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.publish(kpi("q1", "rd-boost-gva", 1.5, "2025-Q1"))
    await eventually(lambda: db.has_events(1), "the return")
    put_lock = NatsReviewBus.put_lock
    failures = [TimeoutError("the bucket did not answer")]

    async def flaky(self: NatsReviewBus, lock: Lock) -> None:
        if failures:
            raise failures.pop()
        await put_lock(self, lock)

    monkeypatch.setattr(NatsReviewBus, "put_lock", flaky)
    first = await office.review(**APPROVE)
    assert first.status_code == 503 and first.headers["retry-after"] == "5", first.text
    assert await lock_in_bucket(bus, TARGET) is None
    # The review itself is on the stream; sending it again sets the lock, and stores nothing new.
    again = await office.review(**APPROVE)
    assert again.status_code in (200, 201), again.text
    lock = await lock_in_bucket(bus, TARGET)
    assert lock is not None and lock.review == again.json()["review"]["event"]["id"]
    await eventually(lambda: _reviews(db, 1), "the review stored")
    assert len(await db.events(type="org.cotn.review.v1")) == 1


async def _reviews(db: Database, n: int) -> bool:
    return len(await db.events(type="org.cotn.review.v1")) >= n
