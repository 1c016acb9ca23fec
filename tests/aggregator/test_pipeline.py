"""The aggregator end to end: a real nats-server of the test's own, a real database.

Each test runs on SQLite and on PostgreSQL (the ``database_url`` fixture), publishes to the
events stream as a column service does, runs the app through its lifespan and waits on
conditions with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from nats.aio.msg import Msg
from sqlalchemy.engine import make_url

from services.aggregator.app import Aggregator
from services.aggregator.replay import replay
from services.aggregator.status import StatusEvent
from shared.bus import AGGREGATOR_DURABLE, DLQ_STREAM, EVENTS_STREAM, STATUS_STREAM
from shared.catalogue import Catalogue, load_catalogue
from shared.natsserver import NatsServer

from .harness import (
    T0,
    Bus,
    Database,
    FakeClock,
    eventually,
    kpi,
    milestone,
    running,
    sample,
    settings_for,
)

MILESTONE = "org.cotn.milestone.v1"
KPI = "org.cotn.kpi.v1"
PG_ADMIN_URL = os.environ.get("COTN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def persisted(aggregator: Aggregator, event_type: str = MILESTONE) -> float:
    return sample(aggregator.registry, "cotn_events_persisted_total", type=event_type)


async def test_every_event_is_stored_once(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    milestones = [
        milestone(f"m{i}", "2a", "adoption-priorities", "in_progress", T0 + timedelta(minutes=i))
        for i in range(40)
    ]
    kpis = [kpi(f"k{i}", "exports", 126 + i, str(2020 + i)) for i in range(5)]
    async with running(settings_for(fresh_nats.url, database_url)) as aggregator:
        await bus.publish_all(milestones + kpis)
        # A client's retry after the stream's duplicate window: a new Nats-Msg-Id...
        for body in milestones[:10]:
            await bus.publish(body, msg_id_suffix=":resent")
        # ...and within it, which JetStream drops itself.
        for body in milestones[:5]:
            await bus.publish(body)
        # The id of m0 again with another payload: kept aside, the first one stays.
        await bus.publish(
            milestone("m0", "2a", "adoption-priorities", "blocked", T0), msg_id_suffix=":changed"
        )

        registry = aggregator.registry

        async def settled() -> bool:
            return (
                sample(registry, "cotn_event_conflicts_total") == 1
                and sample(registry, "cotn_event_duplicates_total") == 10
                and persisted(aggregator) + persisted(aggregator, KPI) == 45
            )

        await eventually(settled, "45 events, 10 duplicates and 1 conflict")
        assert (persisted(aggregator), persisted(aggregator, KPI)) == (40, 5)

        async def no_backlog() -> bool:
            return sample(registry, "cotn_consumer_backlog") == 0

        await eventually(no_backlog, "the backlog gauge back at 0")
    # Observed once a batch is settled too, which the stop waits for.
    assert sample(registry, "cotn_consumer_batch_seconds_count") >= 1

    events = await db.events()
    assert [e.id for e in events] == [f"m{i}" for i in range(40)] + [f"k{i}" for i in range(5)]
    assert [e.stream_seq for e in events] == list(range(1, 46))
    assert events[0].data["status"] == "in_progress"
    assert all(e.received_at.utcoffset() == timedelta(0) for e in events)
    assert (await db.counts())["conflicts"] == 1
    state = await db.state()
    assert state.milestones["2a", "adoption-priorities"].event_id == "m39"
    assert [o.value for o in state.kpi_observations["exports"]] == [126, 127, 128, 129, 130]


async def test_a_late_backfill_never_overwrites_a_newer_status(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    newer, older = T0 + timedelta(days=30), T0
    async with running(settings_for(fresh_nats.url, database_url)) as aggregator:
        await bus.publish(milestone("new", "1a", "joint-position", "completed", newer))
        await bus.publish(kpi("k-new", "life-sciences-jobs", 61000, "2025", newer, source="nhsa"))
        await eventually(lambda: db.has_events(2), "the newer events stored")
        await bus.publish(milestone("old", "1a", "joint-position", "blocked", older))
        await bus.publish(kpi("k-old", "life-sciences-jobs", 50000, "2025", older, source="nhsa"))
        await eventually(lambda: db.has_events(4), "the backfill stored")
    assert persisted(aggregator) == 2  # counted by the time the aggregator has stopped

    state = await db.state()
    assert state.milestones["1a", "joint-position"].status == "completed"
    [jobs] = state.kpi_observations["life-sciences-jobs"]
    assert (jobs.value, jobs.event_time) == (61000, newer)


@asynccontextmanager
async def database_away(database_url: str) -> AsyncIterator[None]:
    """The database refuses the aggregator's writes until the block ends.

    SQLite: another connection holds the write lock. PostgreSQL: the database takes no
    connections and its open ones are cut.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database or "", isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            await asyncio.to_thread(holder.execute, "ROLLBACK")
            holder.close()
        return
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            url.database,
        )
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        await admin.close()


@pytest.mark.fault
async def test_a_database_outage_loses_and_terminates_nothing(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    ack_wait = 1.0
    settings = settings_for(fresh_nats.url, database_url, ack_wait_seconds=ack_wait)
    terminated: list[Msg] = []

    async def note(msg: Msg) -> None:
        terminated.append(msg)

    for advisory in ("MAX_DELIVERIES", "MSG_TERMINATED"):
        await bus.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.{advisory}.{EVENTS_STREAM}.{AGGREGATOR_DURABLE}", cb=note
        )
    before = [milestone(f"b{i}", "2a", "adoption-priorities", "in_progress") for i in range(10)]
    during = [milestone(f"d{i}", "2b", "partner-forum", "in_progress") for i in range(50)]
    async with running(settings) as aggregator:
        await bus.publish_all(before)
        await eventually(lambda: db.has_events(10), "the events before the outage")
        loop = asyncio.get_running_loop()
        async with database_away(database_url):
            down_since = loop.time()
            await bus.publish_all(during)

            async def refused() -> bool:
                return not aggregator.ready()[0]

            await eventually(refused, "/readyz to report the failing database")
            assert "database" in aggregator.ready()[1]

            async def redelivering() -> bool:
                info = await bus.js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
                return info.num_redelivered > 0

            await eventually(redelivering, "nak'd batches to come back")
            # Out for longer than ack_wait: the messages are redelivered meanwhile.
            await asyncio.sleep(max(0.0, 3 * ack_wait - (loop.time() - down_since)))
        await eventually(lambda: db.has_events(60), "every event once the database is back")

        async def caught_up() -> bool:
            info = await bus.js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
            return info.num_pending == 0 and info.num_ack_pending == 0 and aggregator.ready()[0]

        await eventually(caught_up, "the consumer to have acknowledged everything")
        assert persisted(aggregator) == 60
    info = await bus.js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
    assert info.config.max_deliver == -1
    assert terminated == []
    assert sorted(e.id for e in await db.events()) == sorted(e["id"] for e in before + during)


async def test_poison_goes_to_dead_letters_and_the_stream_moves_on(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    unknown = milestone("x1", "9z", "some-milestone", "completed")
    # The event model refuses control characters (PostgreSQL could not store a NUL anyway).
    nul_note = milestone("n1", "2a", "innovate-uk-agreement", "at_risk", note="bad \x00 byte")
    async with running(settings_for(fresh_nats.url, database_url)) as aggregator:
        await bus.publish(milestone("ok1", "2a", "adoption-priorities", "completed"))
        await bus.publish_raw("cotn.events.collaboration.2a.milestone", b"{not json", {})
        await bus.publish(unknown, subject="cotn.events.collaboration.9z.milestone")
        await bus.publish(nul_note, subject="cotn.events.collaboration.2a.milestone")
        await bus.publish(milestone("ok2", "2b", "partner-forum", "in_progress"))
        expected = {"invalid_json", "unknown_proposal", "invalid_event"}

        async def dead_lettered() -> bool:
            counts = await db.counts()
            return counts["dead_letters"] == len(expected) and counts["events"] == 5 - len(expected)

        await eventually(dead_lettered, "the poison dead-lettered and the rest stored")

        # The rows are visible to this connection a moment before the aggregator counts them
        # and publishes them to the DLQ stream.
        async def counted_and_sent() -> bool:
            sent = (await bus.js.stream_info(DLQ_STREAM)).state.messages
            return sent == len(expected) and all(
                sample(aggregator.registry, "cotn_dead_letters_total", reason=reason) > 0
                for reason in expected
            )

        await eventually(counted_and_sent, "each dead letter counted and sent to the DLQ")
        for reason in expected:
            assert sample(aggregator.registry, "cotn_dead_letters_total", reason=reason) == 1
        letters = await bus.read_stream(DLQ_STREAM, "cotn.dlq.>")

    stored = {e.id for e in await db.events()}
    assert stored == {"ok1", "ok2"}
    assert {m.subject for m in letters} == {f"cotn.dlq.{r}" for r in expected}
    by_reason = {(m.headers or {})["Cotn-Reason"]: m for m in letters}
    assert by_reason["invalid_json"].data == b"{not json"
    assert json.loads(by_reason["unknown_proposal"].data) == unknown
    assert (by_reason["unknown_proposal"].headers or {})["Cotn-Subject"] == (
        "cotn.events.collaboration.9z.milestone"
    )


async def test_a_restart_mid_stream_stores_every_event_once(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    total = 2000
    bodies = [
        milestone(f"e{i}", "3a", "offer-defined", "in_progress", T0 + timedelta(seconds=i))
        for i in range(total)
    ]
    await bus.publish_all(bodies)
    # Small batches and a short ack_wait: the stop lands mid-stream, and what the first run
    # fetched but never stored comes back quickly.
    settings = settings_for(fresh_nats.url, database_url, batch_size=50, ack_wait_seconds=2)
    async with running(settings) as first:

        async def under_way() -> bool:
            return sample(first.registry, "cotn_consumer_backlog") > 0 and await db.has_events(1)

        await eventually(under_way, "a backlog and the first batch stored", every=0.005)
    stored_by_first = (await db.counts())["events"]
    assert 0 < stored_by_first < total
    async with running(settings) as second:
        await eventually(lambda: db.has_events(total), "every event after the restart", within=30)
    assert persisted(first) + persisted(second) == total
    assert persisted(first) == stored_by_first
    events = await db.events()
    assert [e.id for e in events] == [b["id"] for b in bodies]
    state = await db.state()
    assert state.milestones["3a", "offer-defined"].event_id == f"e{total - 1}"


async def test_replay_ends_in_the_live_state(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str, catalogue: Catalogue
) -> None:
    rng = random.Random(11)
    keys = [(p.id, m.id) for p in catalogue.proposals[:3] for m in p.milestones[:2]]
    bodies: list[dict[str, Any]] = []
    for i in range(300):
        when = T0 + timedelta(hours=rng.randrange(100))
        if i % 5:
            proposal, m = rng.choice(keys)
            status = rng.choice(["in_progress", "at_risk", "blocked", "completed"])
            bodies.append(milestone(f"e{i}", proposal, m, status, when))
        else:
            value = rng.randrange(50, 70) * 1000
            period = rng.choice(["2024", "2025"])
            bodies.append(kpi(f"e{i}", "life-sciences-jobs", value, period, when, source="nhsa"))
    async with running(settings_for(fresh_nats.url, database_url)):
        await bus.publish_all(bodies)
        await eventually(lambda: db.has_events(300), "every event stored")
    live = await db.state()
    assert await replay(database_url=database_url, catalogue=catalogue) == 300
    assert await db.state() == live
    # And the live state is the newest event of each key, as worked out here.
    newest: dict[tuple[str, str], tuple[Any, int, str]] = {}
    for seq, body in enumerate(bodies, start=1):
        if body["type"] == MILESTONE:
            key = (body["data"]["proposal"], body["data"]["milestone"])
            newest[key] = max(newest.get(key, ("", 0, "")), (body["time"], seq, body["id"]))
    assert {k: s.event_id for k, s in live.milestones.items()} == {
        k: v[2] for k, v in newest.items()
    }


async def test_status_events_are_published_once_per_change(
    fresh_nats: NatsServer, bus: Bus, database_url: str
) -> None:
    clock = FakeClock()  # 2025-06-15: nobody has reported yet, so every proposal is stalled
    settings = settings_for(fresh_nats.url, database_url, status_interval_seconds=0.1)

    async def statuses() -> list[StatusEvent]:
        return [
            StatusEvent.model_validate_json(m.data)
            for m in await bus.read_stream(STATUS_STREAM, "cotn.status.>")
        ]

    async def published(n: int) -> list[StatusEvent] | None:
        events = await statuses()
        return events if len(events) >= n else None

    async with running(settings, clock) as aggregator:
        first = await eventually(lambda: published(7), "a first status for every proposal")
        assert {(e.data.proposal, e.data.version, e.data.rag, e.data.stalled) for e in first} == {
            (p, 1, "red", True) for p in ("1a", "2a", "2b", "3a", "3b", "prevention", "ai-cluster")
        }
        # Progress on 2a: no longer stalled, and nothing else changes.
        await bus.publish(milestone("p1", "2a", "adoption-priorities", "in_progress", clock.now))
        events = await eventually(lambda: published(8), "the change of 2a")
        assert (events[-1].data.proposal, events[-1].data.rag, events[-1].data.stalled) == (
            "2a",
            "green",
            False,
        )
        assert (events[-1].data.previous_rag, events[-1].data.previous_stalled) == ("red", True)
        # Time alone: 46 days without progress stalls 2a again (threshold 45 days).
        clock.advance(timedelta(days=46))
        events = await eventually(lambda: published(9), "2a stalled again")
        assert (events[-1].data.proposal, events[-1].data.version, events[-1].data.stalled) == (
            "2a",
            3,
            True,
        )
        # Further passes find nothing to say.
        assert await aggregator.status.publish_changes() == []
    messages = await bus.read_stream(STATUS_STREAM, "cotn.status.collaboration.2a")
    assert [(m.headers or {})["Nats-Msg-Id"] for m in messages] == [
        f"cotn-aggregator:2a:{v}" for v in (1, 2, 3)
    ]
    assert len(await statuses()) == 9


@pytest.mark.slow
async def test_two_replicas_store_every_event_once(
    fresh_nats: NatsServer, bus: Bus, db: Database, database_url: str
) -> None:
    rng = random.Random(3)
    keys = [("1a", "joint-position"), ("1a", "cluster-evidence"), ("3b", "network-terms")]
    bodies = [
        milestone(
            f"e{i}",
            *rng.choice(keys),
            rng.choice(["in_progress", "at_risk", "completed"]),
            T0 + timedelta(minutes=rng.randrange(10_000)),
        )
        for i in range(1500)
    ]
    settings = settings_for(fresh_nats.url, database_url, batch_size=100)
    async with running(settings) as one, running(settings) as two:
        await bus.publish_all(bodies)
        await eventually(lambda: db.has_events(1500), "every event stored", within=30)
    assert persisted(one) + persisted(two) == 1500  # counted by the time both have stopped
    assert persisted(one) > 0 and persisted(two) > 0
    state = await db.state()
    newest: dict[tuple[str, str], tuple[str, int, str]] = {}
    for seq, body in enumerate(bodies, start=1):
        key = (body["data"]["proposal"], body["data"]["milestone"])
        newest[key] = max(newest.get(key, ("", 0, "")), (body["time"], seq, body["id"]))
    assert {k: s.event_id for k, s in state.milestones.items()} == {
        k: v[2] for k, v in newest.items()
    }


async def test_a_store_that_never_finishes_does_not_hold_shutdown_and_loses_nothing(
    fresh_nats: NatsServer,
    bus: Bus,
    db: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shutdown gives each step the graceful timeout: a store stuck inside its transaction
    (the writes done, the commit never reached) is abandoned, its transaction rolls back,
    and the next aggregator stores the batch once."""
    from services.aggregator import consumer

    stuck = asyncio.Event()
    real_store = consumer.store_batch

    async def store_then_hang(**kw: Any) -> Any:
        outcome = await real_store(**kw)
        stuck.set()
        await asyncio.Event().wait()  # never set: the commit is never reached
        return outcome

    bodies = [milestone(f"s{i}", "2a", "adoption-priorities", "in_progress") for i in range(3)]
    await bus.publish_all(bodies)
    settings = settings_for(fresh_nats.url, database_url, graceful_timeout_seconds=1)
    monkeypatch.setattr(consumer, "store_batch", store_then_hang)
    loop = asyncio.get_running_loop()
    async with running(settings):
        await asyncio.wait_for(stuck.wait(), timeout=20)
        stopping = loop.time()
    # Subscriber, store, status pass, tasks, NATS, database: a few timeouts at most.
    assert loop.time() - stopping < 10
    assert (await db.counts())["events"] == 0  # rolled back, never acknowledged
    monkeypatch.setattr(consumer, "store_batch", real_store)
    async with running(settings_for(fresh_nats.url, database_url, ack_wait_seconds=2)) as again:
        await eventually(lambda: db.has_events(3), "the abandoned batch stored by the next run")
        assert persisted(again) == 3
    assert [e.id for e in await db.events()] == [b["id"] for b in bodies]


async def test_a_stall_the_clock_alone_makes_is_published_at_its_instant(
    fresh_nats: NatsServer, bus: Bus, database_url: str, tmp_path: Path
) -> None:
    """No event and no periodic pass: the status pass wakes when the clock alone changes
    a rating (here 2a's stall threshold passing)."""
    catalogue = load_catalogue()
    document = catalogue.model_dump(mode="json")
    threshold = 3.0
    for proposal in document["proposals"]:
        if proposal["id"] == "2a":
            proposal["stall_threshold"] = f"{threshold:g}s"
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    settings = settings_for(
        fresh_nats.url, database_url, catalogue=path, status_interval_seconds=600
    )

    def utc_now() -> datetime:
        return datetime.now(UTC)

    async def changes_of_2a() -> list[StatusEvent]:
        return [
            StatusEvent.model_validate_json(m.data)
            for m in await bus.read_stream(STATUS_STREAM, "cotn.status.collaboration.2a")
        ]

    async with running(settings, utc_now):
        progress = utc_now()
        await bus.publish(milestone("now", "2a", "adoption-priorities", "in_progress", progress))

        async def stalled() -> list[StatusEvent] | None:
            found = await changes_of_2a()  # stalled at the start, moving, stalled again
            return found if len(found) >= 3 and found[-1].data.stalled else None

        # Far sooner than the 600 s between periodic passes.
        found = await eventually(stalled, "2a stalled by the clock alone", within=threshold * 10)
    # Its milestones are long overdue, so it is red throughout: the stall is the change.
    assert [e.data.stalled for e in found][-2:] == [False, True]
    assert found[-1].time >= progress + timedelta(seconds=threshold)
