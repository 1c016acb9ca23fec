"""The read side on a larger programme than the shipped one, on SQLite and PostgreSQL: the
state as loaded, the status pass that rates it a few proposals at a time, and replay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from bench.workload import Scale, generated_catalogue
from services.aggregator.board import programme_view
from services.aggregator.db import session_factory, upgrade
from services.aggregator.replay import replay
from services.aggregator.status import StatusEvent, StatusPublisher
from services.aggregator.storage.log import EVENT
from shared.catalogue import Catalogue
from shared.health import KpiObservation, MilestoneState, programme_health
from shared.kinds.kpi import KPI_OBSERVATION
from shared.kinds.kpi import TYPE as KPI_TYPE
from shared.kinds.milestone import MILESTONE_STATE, MILESTONE_STATUSES
from shared.kinds.milestone import TYPE as MILESTONE_TYPE

from .harness import Database, FakeClock, database_at

# Reported in a zone two hours east of UTC: the state must come back in UTC all the same.
EAST = timezone(timedelta(hours=2))


@pytest.fixture(scope="module")
def large() -> Catalogue:
    """More proposals than one chunk of a status pass, with ten milestones each."""
    shape = Scale(proposals=107, milestones_per_proposal=10, columns=3)
    return Catalogue.model_validate(generated_catalogue(shape))


@pytest.fixture
async def db(database_url: str, large: Catalogue) -> AsyncIterator[Database]:
    """The database holding a state for every third milestone and a few KPI reports."""
    await upgrade(database_url)
    milestones = [
        {
            "proposal": p.id,
            "milestone": m.id,
            "status": MILESTONE_STATUSES[(i + j) % len(MILESTONE_STATUSES)],
            "event_time": datetime(2025, 1, 2, tzinfo=EAST) + timedelta(hours=i + j),
            "stream_seq": i * 100 + j,
            "source": p.partners[0],
            "event_id": f"e-{p.id}-{m.id}",
            "note": f'note "{i}"' if j == 0 else None,
        }
        for i, p in enumerate(large.proposals)
        for j, m in enumerate(p.milestones)
        if (i + j) % 3 == 0
    ]
    kpis = [
        {
            "kpi": k.id,
            "period": "2025-Q1",
            "value": 50.0 + n,
            "event_time": datetime(2025, 4, 1, 9, tzinfo=EAST),
            "stream_seq": 10**6 + n,
            "source": k.reporters[0],
            "event_id": f"k-{k.id}",
        }
        for n, k in enumerate(large.kpis[:5])
    ]
    async with database_at(database_url) as database:
        async with database.engine.begin() as connection:
            await connection.execute(sa.insert(MILESTONE_STATE), milestones)
            await connection.execute(sa.insert(KPI_OBSERVATION), kpis)
        yield database


async def test_load_state_reads_every_row_with_utc_times(db: Database, large: Catalogue) -> None:
    state = await db.state()
    assert len(state.milestones) == sum(
        1
        for i, p in enumerate(large.proposals)
        for j in range(len(p.milestones))
        if (i + j) % 3 == 0
    )
    first = large.proposals[0]
    assert state.milestones[(first.id, "m01")] == MilestoneState(
        first.id,
        "m01",
        MILESTONE_STATUSES[0],
        datetime(2025, 1, 1, 22, tzinfo=UTC),
        first.partners[0],
        f"e-{first.id}-m01",
        'note "0"',
    )
    times = [s.event_time for s in state.milestones.values()]
    times += [o.event_time for obs in state.kpi_observations.values() for o in obs]
    assert {t.tzinfo for t in times} == {UTC}
    k = large.kpis[0]
    assert state.kpi_observations[k.id] == [
        KpiObservation(
            k.id, "2025-Q1", 50.0, datetime(2025, 4, 1, 7, tzinfo=UTC), k.reporters[0], "k-k01"
        )
    ]


async def test_a_status_pass_publishes_what_programme_health_says(
    db: Database, large: Catalogue
) -> None:
    clock = FakeClock(datetime(2025, 2, 1, tzinfo=UTC))  # before the first due date
    sent: list[StatusEvent] = []
    reads_between = 0

    async def publish(event: StatusEvent) -> None:
        sent.append(event)

    async def reader() -> None:
        # Runs only when the pass yields: between chunks of proposals, or while it awaits.
        nonlocal reads_between
        while True:
            await asyncio.sleep(0)
            reads_between += 1

    publisher = StatusPublisher(
        catalogue=large,
        readers=session_factory(db.engine),
        writers=session_factory(db.engine, writer=True),
        clock=clock,
        publish=publish,
        interval=60,
    )
    task = asyncio.ensure_future(reader())
    try:
        await publisher.publish_changes()
    finally:
        task.cancel()
    expected = programme_health(large, await db.state(), clock.now).proposals
    assert [e.data.proposal for e in sent] == [p.id for p in large.proposals]
    assert {e.data.proposal: (e.data.rag, e.data.stalled) for e in sent} == {
        pid: (h.rag, h.stalled) for pid, h in expected.items()
    }
    assert {e.data.proposal: [r.rule for r in e.data.reasons] for e in sent} == {
        pid: [r.rule for r in h.reasons] for pid, h in expected.items()
    }
    # One reason record on the wire: a status event's reasons are the board's.
    board = programme_view(large, programme_health(large, await db.state(), clock.now))
    assert {e.data.proposal: e.data.reasons for e in sent} == {
        p.id: p.reasons for c in board.columns for p in c.proposals
    }
    assert len({e.data.rag for e in sent}) > 1  # the state gives more than one colour
    assert reads_between > 0
    # Nothing changed: the next pass publishes nothing.
    assert await publisher.publish_changes() == []


async def test_replay_folds_and_counts_only_the_catalogues_events(
    database_url: str, large: Catalogue
) -> None:
    await upgrade(database_url)
    p, q = large.proposals[0], large.proposals[-1]
    kpi = large.kpis[0]
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    events = [
        # Three reports of one milestone (the newest by time wins, not the last stored) ...
        _event(1, p.id, {"milestone": "m01", "status": "completed"}, t0 + timedelta(days=2)),
        _event(2, p.id, {"milestone": "m01", "status": "blocked"}, t0 + timedelta(days=3)),
        _event(3, p.id, {"milestone": "m01", "status": "at_risk"}, t0 + timedelta(days=1)),
        _event(4, q.id, {"milestone": "m10", "status": "in_progress"}, t0),
        # ... one of a milestone and one of a KPI the catalogue does not know ...
        _event(5, q.id, {"milestone": "m99", "status": "blocked"}, t0),
        _event(6, p.id, {"kpi": "unknown-kpi", "period": "2025", "value": 1.0}, t0),
        # ... and two of one KPI period.
        _event(7, p.id, {"kpi": kpi.id, "period": "2025", "value": 2.0}, t0),
        _event(8, p.id, {"kpi": kpi.id, "period": "2025", "value": 3.0}, t0 - timedelta(days=1)),
    ]
    async with database_at(database_url) as database:
        async with database.engine.begin() as connection:
            await connection.execute(sa.insert(EVENT), events)
        assert await replay(database_url=database_url, catalogue=large) == 6
        state = await database.state()
    assert {key: s.status for key, s in state.milestones.items()} == {
        (p.id, "m01"): "blocked",
        (q.id, "m10"): "in_progress",
    }
    assert [(o.period, o.value) for o in state.kpi_observations[kpi.id]] == [("2025", 2.0)]
    assert set(state.kpi_observations) == {kpi.id}


def _event(seq: int, proposal: str, data: dict[str, object], at: datetime) -> dict[str, object]:
    """An ``event`` row as the consumer stores it."""
    kind = MILESTONE_TYPE if "milestone" in data else KPI_TYPE
    return {
        "source": "a01",
        "event_id": f"e{seq}",
        "stream_seq": seq,
        "type": kind,
        "column": "c01",
        "proposal": proposal,
        "milestone": data.get("milestone"),
        "kpi": data.get("kpi"),
        "event_time": at,
        "received_at": at,
        "data": {"proposal": proposal, **data} if kind == MILESTONE_TYPE else data,
        "digest": f"{seq:064d}",
    }
