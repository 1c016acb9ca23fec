"""The live board from snapshots: always a fresh rating, tagged, and alike on two replicas.

Through a real nats-server and a real database (SQLite and PostgreSQL): events go in as a
column service publishes them, the app runs through its lifespan, and its answers are
compared with :func:`shared.health.programme_health` over the stored state at the same
:class:`FakeClock` instant, after events and after the clock crosses a stall threshold
and a midnight.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic_core import to_json

from services.aggregator import queries
from services.aggregator import snapshot as snapshot_module
from services.aggregator.app import create_app
from services.aggregator.board import LIVE, NO_LOCKS, kpi_list, programme_document
from services.aggregator.consumer import decode
from services.aggregator.db import session_factory, upgrade
from services.aggregator.settings import AggregatorSettings
from services.aggregator.snapshot import LiveBoard, Snapshot, build_snapshot
from services.aggregator.store import store_batch
from shared.health import Touched, programme_health, rated_again
from shared.natsserver import NatsServer

from .harness import (
    CATALOGUE,
    T0,
    Bus,
    Database,
    FakeClock,
    cloudevent,
    database_at,
    eventually,
    js_reply,
    kpi,
    milestone,
    settings_for,
    subject_of,
)

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
# 1a stalls 60 days after its last milestone event; this one puts that at 13:00 today.
STALLS_AT_ONE = NOW - timedelta(days=60) + timedelta(hours=1)
PROGRAMME_GAUGES = (
    "cotn_proposal_",
    "cotn_milestones",
    "cotn_milestone_overdue",
    "cotn_kpi_value",
    "cotn_kpi_expected",
    "cotn_kpi_target",
    "cotn_kpi_off_trajectory",
    "cotn_kpi_evidence",
    "cotn_kpi_actual_approved",
)


@asynccontextmanager
async def serving(
    settings: AggregatorSettings, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The aggregator app through its lifespan, once it consumes, and a client of it."""
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.aggregator.consuming.wait(), timeout=30)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as client:
            yield client


async def fresh(db: Database, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The board and the KPI list a full rating of the stored state at ``now`` gives."""
    health = programme_health(CATALOGUE, await db.state(), now)
    board = json.loads(to_json(programme_document(CATALOGUE, health, LIVE, NO_LOCKS)))
    kpis = json.loads(kpi_list(CATALOGUE, health, LIVE, NO_LOCKS).model_dump_json())
    return board, kpis


def rated(document: dict[str, Any]) -> dict[str, Any]:
    """A document without ``generated_at``: the live board's is when it was last rated."""
    return {k: v for k, v in document.items() if k != "generated_at"}


def proposal_of(board: dict[str, Any], proposal_id: str) -> dict[str, Any]:
    return next(p for c in board["columns"] for p in c["proposals"] if p["id"] == proposal_id)


async def assert_fresh(client: httpx.AsyncClient, db: Database, clock: FakeClock) -> str:
    """The live board and KPIs are the full rating at the clock's now; the board's ETag."""
    board, kpis = await fresh(db, clock.now)
    response = await client.get("/v1/programme")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    live = response.json()
    assert rated(live) == rated(board)
    assert datetime.fromisoformat(live["generated_at"]) <= clock.now
    assert rated((await client.get("/v1/kpis")).json()) == rated(kpis)
    detail = (await client.get("/v1/proposals/1a")).json()
    assert {k: v for k, v in detail.items() if k in proposal_of(board, "1a")} == proposal_of(
        board, "1a"
    )
    return str(response.headers["etag"])


async def test_the_live_board_is_a_fresh_rating_after_events_and_clock_moves(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    clock = FakeClock(NOW)
    async with serving(settings_for(fresh_nats.url, database_url), clock) as client:
        await bus.publish_all(
            [
                milestone("a1", "1a", "cluster-evidence", "in_progress", STALLS_AT_ONE),
                milestone("a2", "2a", "adoption-priorities", "blocked", T0),
            ]
        )
        await eventually(lambda: db.has_events(2), "both events stored")
        first = await assert_fresh(client, db, clock)
        board = (await client.get("/v1/programme")).json()
        built = board["generated_at"]
        assert (proposal_of(board, "1a")["rag"], proposal_of(board, "1a")["stalled"]) == (
            "amber",  # over half its stall threshold quiet
            False,
        )

        # Nothing changed: the same snapshot, the same tag, built when first asked.
        clock.advance(timedelta(minutes=30))
        assert await assert_fresh(client, db, clock) == first
        assert (await client.get("/v1/programme")).json()["generated_at"] == built

        # Past 13:00 1a is stalled: the clock alone made the snapshot stale.
        clock.advance(timedelta(hours=1))
        after_stall = await assert_fresh(client, db, clock)
        assert after_stall != first
        stalled = proposal_of((await client.get("/v1/programme")).json(), "1a")
        assert (stalled["stalled"], stalled["rag"]) == (True, "red")

        # Past midnight: forecasts, KPI expectations and the stall's day count move.
        clock.now = datetime(2025, 6, 16, 0, 0, 1, tzinfo=UTC)
        after_midnight = await assert_fresh(client, db, clock)
        assert after_midnight != after_stall

        # An event: the store's version moves, the next answer is the new rating.
        await bus.publish(milestone("a3", "1a", "cluster-evidence", "completed", NOW))
        await eventually(lambda: db.has_events(3), "the third event stored")
        after_event = await assert_fresh(client, db, clock)
        assert after_event != after_midnight
        done = proposal_of((await client.get("/v1/programme")).json(), "1a")
        assert done["stalled"] is False


async def test_if_none_match_is_answered_304_while_the_board_is_the_same(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    clock = FakeClock(NOW)
    async with serving(settings_for(fresh_nats.url, database_url), clock) as client:
        await bus.publish(milestone("b1", "2a", "adoption-priorities", "blocked", T0))
        await eventually(lambda: db.has_events(1), "the event stored")
        for path in ("/v1/programme", "/v1/kpis", "/v1/proposals/2a"):
            first = await client.get(path)
            etag = first.headers["etag"]
            assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
            for held in (etag, "*", f'"other", W/{etag}'):
                again = await client.get(path, headers={"If-None-Match": held})
                assert (again.status_code, again.content) == (304, b""), (path, held)
                assert again.headers["etag"] == etag
            other = await client.get(path, headers={"If-None-Match": '"not-it"'})
            assert (other.status_code, other.content) == (200, first.content)
            # A view of the past is read and rated as asked, never tagged.
            past = await client.get(path, params={"as_at": "2025-06-10T00:00:00Z"})
            assert past.status_code == 200 and "etag" not in past.headers

        proposal_etag = (await client.get("/v1/proposals/2a")).headers["etag"]
        await bus.publish(milestone("b2", "2a", "adoption-priorities", "in_progress", NOW))
        await eventually(lambda: db.has_events(2), "the second event stored")
        changed = await client.get("/v1/proposals/2a", headers={"If-None-Match": proposal_etag})
        assert changed.status_code == 200 and changed.headers["etag"] != proposal_etag
        assert changed.json()["milestones"][0]["status"] == "in_progress"


def programme_gauges(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(PROGRAMME_GAUGES)]


async def test_two_replicas_give_byte_equal_answers(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    clock = FakeClock(NOW)
    bodies = [
        milestone(f"r{i}", proposal, milestone_id, status, T0 + timedelta(hours=i))
        for i, (proposal, milestone_id, status) in enumerate(
            [
                ("1a", "joint-position", "completed"),
                ("1a", "cluster-evidence", "in_progress"),
                ("2a", "adoption-priorities", "blocked"),
                ("3b", "network-terms", "at_risk"),
            ]
            * 25
        )
    ]
    settings = settings_for(fresh_nats.url, database_url, batch_size=10)
    async with serving(settings, clock) as one, serving(settings, clock) as two:
        # Both rate the empty store first, so each must see the other's commits.
        assert (await one.get("/v1/programme")).content == (await two.get("/v1/programme")).content
        await bus.publish_all(bodies)
        await eventually(lambda: db.has_events(len(bodies)), "every event stored", within=30)
        boards = [(await c.get("/v1/programme")) for c in (one, two)]
        assert boards[0].content == boards[1].content
        assert boards[0].headers["etag"] == boards[1].headers["etag"]
        assert rated(boards[0].json()) == rated((await fresh(db, clock.now))[0])
        gauges = [programme_gauges((await c.get("/metrics")).text) for c in (one, two)]
        assert gauges[0] == gauges[1]
        assert 'cotn_proposal_rag{column="collaboration",proposal="2a"} 2.0' in gauges[0]


async def test_requests_that_find_the_snapshot_stale_wait_for_one_build(
    db: Database, database_url: str
) -> None:
    await upgrade(database_url)
    live = LiveBoard(catalogue=CATALOGUE, sessions=db.sessions, clock=FakeClock(NOW))
    snapshots = await asyncio.gather(*(live.snapshot() for _ in range(8)))
    assert all(s is snapshots[0] for s in snapshots)
    assert (snapshots[0].version, snapshots[0].health.at) == (0, NOW)
    assert snapshots[0].valid_until == datetime(2025, 6, 16, tzinfo=UTC)  # nothing reported


SEQ = itertools.count(1)


async def store(database_url: str, bodies: list[dict[str, Any]]) -> None:
    """``bodies`` stored as the consumer stores a batch, in one commit."""
    decoded = [
        decode(
            SimpleNamespace(
                subject=subject_of(b), data=json.dumps(b).encode(), reply=js_reply(next(SEQ), NOW)
            ),
            CATALOGUE,
        )
        for b in bodies
    ]
    async with database_at(database_url) as writer:
        async with session_factory(writer.engine, writer=True)() as session:
            await store_batch(session=session, events=decoded, recorded_at=NOW)
            await session.commit()


def moved(keys: list[tuple[str, str]], status: str) -> list[dict[str, Any]]:
    """A milestone event of each of ``keys``, now."""
    return [milestone(f"{status}-{p}-{m}", p, m, status, NOW) for p, m in keys]


def rating_again(count: int) -> list[tuple[str, str]]:
    """Milestones of ``count`` proposals, each of which rates again its own proposal only."""
    lone = {}
    for p in CATALOGUE.proposals:
        for m in p.milestones:
            if [r.id for r in rated_again(CATALOGUE, Touched(frozenset({(p.id, m.id)})))] == [p.id]:
                lone.setdefault(p.id, (p.id, m.id))
    assert len(lone) >= count
    return list(lone.values())[:count]


async def test_a_live_read_waits_for_a_small_build_not_for_a_large_one_nor_after_it(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade(database_url)
    clock = FakeClock(NOW)
    live = LiveBoard(catalogue=CATALOGUE, sessions=db.sessions, clock=clock, wait_proposals=2)
    first = await live.snapshot(lag=True)  # no board yet to answer with: it waits
    keys = rating_again(3)
    one = keys[0][0]

    # A change rating two proposals again: a live read waits for it, as any read does.
    await store(database_url, moved(keys[:2], "at_risk"))
    small = await live.snapshot(lag=True)
    assert small.version == first.version + 1
    assert small.health.proposals[one].milestones != first.health.proposals[one].milestones

    # Three proposals: while that build runs (held here), live reads get the last board.
    held = threading.Event()

    def held_build(*args: Any, **kwargs: Any) -> Snapshot:
        held.wait(timeout=30)
        return build_snapshot(*args, **kwargs)

    monkeypatch.setattr(snapshot_module, "build_snapshot", held_build)
    await store(database_url, moved(keys, "blocked"))
    fresh_read = asyncio.create_task(live.snapshot())
    assert await live.snapshot(lag=True) is small
    assert await live.snapshot(lag=True) is small  # the build still running, not another
    assert not fresh_read.done()  # the status pass's read waits for every commit
    held.set()
    large = await fresh_read
    assert large.version == small.version + 1
    assert {large.health.proposals[p].rag for p, _ in keys} == {"red"}
    full = await LiveBoard(catalogue=CATALOGUE, sessions=db.sessions, clock=clock).snapshot()
    assert (large.programme.body, large.kpis.body) == (full.programme.body, full.kpis.body)

    # After a large build (the programme changing fast), a live read gets the last board
    # at once, even for a small change, and starts the next build.
    await store(database_url, moved(keys[:1], "completed"))
    assert await live.snapshot(lag=True) is large
    after = await live.snapshot()
    assert after.version == large.version + 1
    # That build was small: live reads wait for the next one again.
    await store(database_url, moved(keys[1:2], "completed"))
    assert (await live.snapshot(lag=True)).version == after.version + 1


async def test_a_store_that_fails_while_busy_is_reported_at_the_next_live_read(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade(database_url)
    live = LiveBoard(
        catalogue=CATALOGUE, sessions=db.sessions, clock=FakeClock(NOW), wait_proposals=0
    )
    await live.snapshot(lag=True)
    await store(database_url, moved(rating_again(1), "at_risk"))
    busy = await live.snapshot()  # a build rating one proposal again: more than 0

    async def unreadable(**_: Any) -> int:
        raise ConnectionRefusedError("the store is away")

    monkeypatch.setattr(queries, "store_version", unreadable)
    assert await live.snapshot(lag=True) is busy  # at once, its build failing behind it
    await asyncio.sleep(0.05)  # that build's end
    with pytest.raises(ConnectionRefusedError):
        await live.snapshot(lag=True)  # not the last board for ever: the store's failure


def review(event_id: str, action: str, **data: str) -> dict[str, Any]:
    """A review event as the office's route publishes it."""
    body = cloudevent(event_id, "office/alice", "2025-06-15T12:00:00Z", {"action": action, **data})
    return {**body, "type": "org.cotn.review.v1"}


async def test_the_board_kept_up_to_date_is_the_board_rated_in_full(
    fresh_nats: NatsServer,
    bus: Bus,
    db: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(NOW)
    reads = {"all": 0, "own": 0}  # whole reads of the state: all, and this test's own
    load_state = queries.load_state

    async def counted(**kwargs: Any) -> Any:
        reads["all"] += 1
        return await load_state(**kwargs)

    async def same_as_full(client: httpx.AsyncClient) -> None:
        """The live board and KPIs are byte for byte what a full build gives now."""
        served = await client.get("/v1/programme")
        served_kpis = await client.get("/v1/kpis")
        before = reads["all"]
        full = await LiveBoard(catalogue=CATALOGUE, sessions=db.sessions, clock=clock).snapshot()
        reads["own"] += reads["all"] - before
        assert served.content == full.programme.body
        assert served_kpis.content == full.kpis.body

    def app_reads() -> int:
        return reads["all"] - reads["own"]

    monkeypatch.setattr(queries, "load_state", counted)
    events = 0

    async def put(*bodies: dict[str, Any]) -> None:
        nonlocal events
        await bus.publish_all(list(bodies))
        events += len(bodies)
        await eventually(lambda: db.has_events(events), f"{events} events stored")

    async with serving(settings_for(fresh_nats.url, database_url), clock) as client:
        await put(milestone("i1", "1a", "cluster-evidence", "in_progress", STALLS_AT_ONE))
        await same_as_full(client)
        # The app's first snapshot is read whole (by a request or by the status pass, which
        # shares the read API's snapshot).
        assert app_reads() == 1
        steps: list[tuple[dict[str, Any], ...]] = [
            (milestone("i2", "2a", "adoption-priorities", "blocked", NOW),),
            # A KPI report and its correction, and a milestone upstream of others.
            (
                kpi("i3", "rd-boost-gva", 1.5, "2025-Q1", NOW),
                milestone("i4", "1a", "joint-position", "completed", NOW),
            ),
            (kpi("i5", "rd-boost-gva", 0.2, "2025-Q1", NOW + timedelta(minutes=1)),),
            # A backfill older than what is held: stored, the board unchanged.
            (milestone("i6", "2a", "adoption-priorities", "completed", T0),),
            (milestone("i7", "3b", "network-terms", "at_risk", NOW),),
        ]
        for i, bodies in enumerate(steps):
            clock.advance(timedelta(minutes=7 * i))  # within the snapshot's validity
            await put(*bodies)
            await same_as_full(client)
        # Across 1a's stall at 13:00, then an event: the clock's change and the rows' too.
        clock.now = STALLS_AT_ONE + timedelta(days=60, minutes=1)
        await put(milestone("i8", "3b", "network-terms", "in_progress", clock.now))
        await same_as_full(client)
        # Every snapshot since the first was kept up to date from the rows, never read whole.
        assert app_reads() == 1

        # A review: the return's lock is read again (the board is read whole).
        await put(review("i9", "approve", kpi="rd-boost-gva", period="2025-Q1", reporter="np11"))
        await same_as_full(client)
        assert app_reads() == 2
        board = (await client.get("/v1/programme")).json()
        (gva,) = [k for k in board["kpis"] if k["id"] == "rd-boost-gva"]
        assert (gva["actual"], gva["actual_approved"]) == (0.2, True)
        # After it, kept up to date from the rows again.
        await put(milestone("i10", "2a", "adoption-priorities", "in_progress", clock.now))
        await same_as_full(client)
        assert app_reads() == 2
