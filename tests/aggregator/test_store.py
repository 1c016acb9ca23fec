"""The repository on a real database (SQLite and PostgreSQL): storing, ordering, reading.

These tests call ``store`` directly with decoded messages; the pipeline tests prove the
same through NATS.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, select

from services.aggregator import queries, store
from services.aggregator.consumer import decode
from services.aggregator.db import make_engine, session_factory, upgrade
from services.aggregator.models import EventConflict
from services.aggregator.replay import replay
from services.aggregator.storage.log import EVENT
from shared.catalogue import Catalogue
from shared.kinds.kpi import KPI_OBSERVATION
from shared.kinds.milestone import MILESTONE_STATE

from .harness import T0, Database, cloudevent, database_at, kpi, milestone
from .test_consumer_units import js_message

NOW = datetime(2025, 7, 1, tzinfo=UTC)


class Log:
    """Messages as they would arrive: each publish gets the next stream sequence."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.seq = 0

    def __call__(self, *bodies: dict[str, Any]) -> list[store.NewEvent]:
        out = []
        for body in bodies:
            self.seq += 1
            out.append(decode(js_message(body, seq=self.seq), self.catalogue))
        return out


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade(database_url)
    async with database_at(database_url) as database:
        yield database


@pytest.fixture
def log(catalogue: Catalogue) -> Log:
    return Log(catalogue)


async def put(db: Database, events: list[store.NewEvent]) -> store.BatchOutcome:
    writers = session_factory(db.engine, writer=True)
    async with writers() as session, session.begin():
        return await store.store_batch(session=session, events=events, recorded_at=NOW)


async def test_migrations_match_the_models(database_url: str) -> None:
    await upgrade(database_url)
    await upgrade(database_url)  # a second run is a no-op
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def version(db: Database) -> int:
    async with db.sessions() as session:
        return await queries.store_version(session=session)


async def test_the_store_version_moves_when_what_the_board_reads_changes(
    db: Database, log: Log, database_url: str, catalogue: Catalogue
) -> None:
    assert await version(db) == 0  # as migrated
    first = milestone("v1", "2a", "adoption-priorities", "in_progress")
    await put(db, log(first))
    assert await version(db) == 1
    await put(db, log(first))  # a redelivery stores nothing: the board is as it was
    assert await version(db) == 1
    await put(db, log(milestone("v2", "2a", "adoption-priorities", "blocked"), first))
    assert await version(db) == 2
    await replay(database_url=database_url, catalogue=catalogue)
    assert await version(db) == 3


async def changed(db: Database, since: int) -> tuple[set[str], set[str], int]:
    """The ids of the milestone and KPI rows written after version ``since``, and the last
    version a reader must read whole."""
    async with db.sessions() as session:
        milestones, observations = await queries.changed_since(session=session, version=since)
        rebuilt = await queries.store_rebuilt(session=session)
    return {m.event_id for m in milestones}, {o.event_id for o in observations}, rebuilt


async def test_projection_rows_carry_the_version_of_the_commit_that_wrote_them(
    db: Database, log: Log, database_url: str, catalogue: Catalogue
) -> None:
    await put(db, log(milestone("w1", "2a", "adoption-priorities", "in_progress")))
    await put(db, log(kpi("w2", "rd-boost-gva", 1.5, "2025-Q1")))
    assert await changed(db, 0) == ({"w1"}, {"w2"}, 0)
    assert await changed(db, 1) == (set(), {"w2"}, 0)
    assert await changed(db, 2) == (set(), set(), 0)
    # A newer status replaces the row and its version; a backfill older than it, neither.
    later = T0 + timedelta(days=2)
    await put(db, log(milestone("w3", "2a", "adoption-priorities", "blocked", later)))
    await put(db, log(milestone("w4", "2a", "adoption-priorities", "completed", T0)))
    assert await version(db) == 4
    assert await changed(db, 2) == ({"w3"}, set(), 0)
    assert await changed(db, 3) == (set(), set(), 0)
    # A review may take rows out and changes a lock: past it, read the projections whole.
    await put(
        db, log(review("w5", "approve", kpi="rd-boost-gva", period="2025-Q1", reporter="np11"))
    )
    assert await changed(db, 4) == (set(), set(), 5)
    await replay(database_url=database_url, catalogue=catalogue)
    assert await changed(db, 5) == ({"w3"}, {"w2"}, 6)  # every row written again


async def test_an_event_is_stored_once_and_a_changed_payload_is_a_conflict(
    db: Database, log: Log
) -> None:
    first = milestone("e1", "2a", "adoption-priorities", "in_progress")
    changed = milestone("e1", "2a", "adoption-priorities", "blocked", T0 + timedelta(days=1))
    other = milestone("e2", "2a", "innovate-uk-agreement", "in_progress")
    # One batch holding the event, its redelivery and a changed copy.
    outcome = await put(db, log(first, first, changed, other))
    assert (outcome.persisted["org.cotn.milestone.v1"], outcome.duplicates, outcome.conflicts) == (
        2,
        1,
        1,
    )
    # Later batches: the same again stores nothing and records the conflict only once.
    outcome = await put(db, log(first, changed, other))
    assert (sum(outcome.persisted.values()), outcome.duplicates, outcome.conflicts) == (0, 2, 0)

    events = await db.events()
    assert [(e.id, e.data["status"], e.stream_seq) for e in events] == [
        ("e1", "in_progress", 1),
        ("e2", "in_progress", 4),
    ]
    state = await db.state()
    assert state.milestones["2a", "adoption-priorities"].status == "in_progress"
    async with db.sessions() as session:
        conflicts = (await session.exec(select(EventConflict))).all()
    assert [
        (c.event_id, c.stream_seq, c.first_stream_seq, c.data["status"]) for c in conflicts
    ] == [("e1", 3, 1, "blocked")]


async def test_a_batch_of_new_and_stored_events_moves_the_projections_by_the_new_ones(
    db: Database, log: Log
) -> None:
    await put(db, log(milestone("e1", "2a", "adoption-priorities", "in_progress")))
    outcome = await put(
        db,
        log(
            # A changed copy of a stored event, newer: a conflict, which moves nothing.
            milestone("e1", "2a", "adoption-priorities", "completed", T0 + timedelta(days=5)),
            milestone("e2", "2a", "innovate-uk-agreement", "at_risk", T0 + timedelta(days=1)),
            kpi("k1", "exports", 120, "2025", T0 + timedelta(days=1)),
        ),
    )
    assert (sum(outcome.persisted.values()), outcome.duplicates, outcome.conflicts) == (2, 0, 1)
    state = await db.state()
    assert {k: (s.status, s.event_id) for k, s in state.milestones.items()} == {
        ("2a", "adoption-priorities"): ("in_progress", "e1"),
        ("2a", "innovate-uk-agreement"): ("at_risk", "e2"),
    }
    assert [(o.period, o.value) for o in state.kpi_observations["exports"]] == [("2025", 120)]


async def test_the_newest_event_time_wins_whatever_the_arrival_order(
    db: Database, log: Log
) -> None:
    later, earlier = T0 + timedelta(days=10), T0
    # Separate batches: the late backfill arrives after the newer status.
    await put(db, log(milestone("new", "1a", "joint-position", "completed", later)))
    await put(db, log(milestone("old", "1a", "joint-position", "at_risk", earlier)))
    # One batch, backfill last.
    await put(
        db,
        log(
            milestone("b-new", "1a", "cluster-evidence", "in_progress", later),
            milestone("b-old", "1a", "cluster-evidence", "blocked", earlier),
        ),
    )
    # The same time: the later stream sequence wins.
    await put(db, log(milestone("t1", "2a", "adoption-priorities", "at_risk", later)))
    await put(db, log(milestone("t2", "2a", "adoption-priorities", "completed", later)))
    # KPIs likewise, per (kpi, period).
    await put(
        db,
        log(
            kpi("k-new", "exports", 140, "2025", later),
            kpi("k-old", "exports", 100, "2025", earlier),
            kpi("k-2024", "exports", 126, "2024", earlier),
        ),
    )
    state = await db.state()
    assert {k: (s.status, s.event_id, s.event_time) for k, s in state.milestones.items()} == {
        ("1a", "joint-position"): ("completed", "new", later),
        ("1a", "cluster-evidence"): ("in_progress", "b-new", later),
        ("2a", "adoption-priorities"): ("completed", "t2", later),
    }
    assert [(o.period, o.value, o.event_time) for o in state.kpi_observations["exports"]] == [
        ("2024", 126, earlier),
        ("2025", 140, later),
    ]


async def test_timestamps_read_back_aware_in_utc(db: Database, log: Log) -> None:
    await put(db, log(milestone("e1", "2a", "adoption-priorities", "completed")))
    [event] = await db.events()
    assert event.event_time == T0 and event.event_time.tzinfo is not None
    assert event.received_at.utcoffset() == timedelta(0)
    state = await db.state()
    assert state.milestones["2a", "adoption-priorities"].event_time.utcoffset() == timedelta(0)


async def test_the_audit_trail_pages_and_filters(db: Database, log: Log) -> None:
    bodies = [
        milestone(f"m{i}", "2a", "adoption-priorities", "in_progress", T0 + timedelta(hours=i))
        for i in range(7)
    ] + [kpi(f"k{i}", "exports", 130 + i, "2025", T0 + timedelta(hours=i)) for i in range(3)]
    await put(db, log(*bodies))
    async with db.sessions() as session:
        page, cursor = await queries.list_events(session=session, limit=4)
        assert [e.id for e in page] == ["m0", "m1", "m2", "m3"] and cursor
        page, cursor = await queries.list_events(session=session, limit=4, cursor=cursor)
        assert [e.id for e in page] == ["m4", "m5", "m6", "k0"] and cursor
        page, cursor = await queries.list_events(session=session, limit=4, cursor=cursor)
        assert [e.id for e in page] == ["k1", "k2"] and cursor is None
        kpis, _ = await queries.list_events(session=session, type="org.cotn.kpi.v1", proposal="3a")
        assert [e.id for e in kpis] == ["k0", "k1", "k2"]
        recent, _ = await queries.list_events(
            session=session, source="greater-manchester", since=T0 + timedelta(hours=5)
        )
        assert [e.id for e in recent] == ["m5", "m6"]
        with pytest.raises(ValueError, match="cursor"):
            await queries.list_events(session=session, cursor="not-a-cursor")
        assert await queries.counts(session=session) == {
            "events": 10,
            "milestone_states": 1,
            "kpi_observations": 1,
            "conflicts": 0,
            "dead_letters": 0,
        }


async def test_replay_rebuilds_the_projections(
    db: Database, log: Log, catalogue: Catalogue, database_url: str
) -> None:
    rng = random.Random(7)
    keys = [("1a", "joint-position"), ("1a", "cluster-evidence"), ("2a", "adoption-priorities")]
    bodies = []
    for i in range(200):
        when = T0 + timedelta(hours=rng.randrange(48))  # many ties: the stream sequence decides
        if i % 4:
            proposal, m = rng.choice(keys)
            status = rng.choice(["in_progress", "at_risk", "blocked", "completed"])
            bodies.append(milestone(f"e{i}", proposal, m, status, when))
        else:
            bodies.append(
                kpi(f"e{i}", "exports", rng.randrange(100, 200), rng.choice(["2024", "2025"]), when)
            )
    for start in range(0, 200, 30):
        await put(db, log(*bodies[start : start + 30]))
    live = await db.state()

    async with db.sessions() as session, session.begin():
        await session.exec(sa.delete(MILESTONE_STATE))
        await session.exec(sa.update(KPI_OBSERVATION).values(value=-1))
    assert await replay(database_url=database_url, catalogue=catalogue) == 200
    assert await db.state() == live


# Locks: an approved return keeps later events aside by stream order, however the batches
# arrive (the review API and the column services are tested apart).


def review(event_id: str, action: str, reason: str | None = None, **target: str) -> dict[str, Any]:
    data: dict[str, Any] = {"action": action, **target}
    if reason:
        data["reason"] = reason
    return cloudevent(event_id, "office/jane", "2025-07-01T10:00:00Z", data, "review")


TARGET = {"kpi": "life-sciences-jobs", "period": "2025", "reporter": "nhsa"}


async def observed(db: Database) -> float | None:
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(KPI_OBSERVATION.c.value).where(KPI_OBSERVATION.c.period == "2025")
            )
        ).first()
    return None if row is None else row.value


async def held(db: Database) -> dict[str, int | None]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(EVENT.c.event_id, EVENT.c.held).where(EVENT.c.type == "org.cotn.kpi.v1")
        )
        return {r.event_id: r.held for r in rows}


async def test_an_approval_keeps_later_events_of_its_return_aside(db: Database, log: Log) -> None:
    first = log(kpi("k1", "life-sciences-jobs", 100, "2025", T0, source="nhsa"))
    approval = log(review("r1", "approve", **TARGET))
    late = log(kpi("k2", "life-sciences-jobs", 999, "2025", T0 + timedelta(hours=1), source="nhsa"))
    other = log(kpi("k3", "life-sciences-jobs", 120, "2025", T0 + timedelta(hours=2)))
    outcome = await put(db, first + approval + late)
    assert outcome.held == 1
    assert await held(db) == {"k1": None, "k2": 2}
    assert await observed(db) == 100
    # Another reporter's return of the same KPI period is its own, and not locked.
    await put(db, other)
    assert await observed(db) == 120


async def test_a_review_stored_after_later_events_holds_them_and_folds_again(
    db: Database, log: Log
) -> None:
    first = log(kpi("k1", "life-sciences-jobs", 100, "2025", T0, source="nhsa"))
    approval = log(review("r1", "approve", **TARGET))
    late = log(kpi("k2", "life-sciences-jobs", 999, "2025", T0 + timedelta(hours=1), source="nhsa"))
    await put(db, first + late)  # the approval's batch is redelivered after this one
    assert await observed(db) == 999
    outcome = await put(db, approval)
    assert outcome.held == 1
    assert await held(db) == {"k1": None, "k2": 2}
    assert await observed(db) == 100


async def test_a_reopen_releases_what_comes_after_it_only(db: Database, log: Log) -> None:
    batch = [
        *log(kpi("k1", "life-sciences-jobs", 100, "2025", T0, source="nhsa")),
        *log(review("r1", "approve", **TARGET)),
        *log(kpi("k2", "life-sciences-jobs", 200, "2025", T0 + timedelta(hours=1), source="nhsa")),
        *log(review("r2", "reopen", "figure restated", **TARGET)),
        *log(kpi("k3", "life-sciences-jobs", 300, "2025", T0 + timedelta(hours=2), source="nhsa")),
    ]
    await put(db, batch)
    assert await held(db) == {"k1": None, "k2": 2, "k3": None}
    assert await observed(db) == 300
    # The same batch again (a redelivery) changes nothing.
    outcome = await put(db, batch)
    assert outcome.held == 0
    assert await held(db) == {"k1": None, "k2": 2, "k3": None}
