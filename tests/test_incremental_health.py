"""The rating kept up to date (shared.health.rerate) is the full rating, at every step.

A long random history per seeded case: milestone events of every status at random times
(backfills among them, which the projection keeps only when newest), KPI reports and
corrections, and clock moves of every size, across stall thresholds, half thresholds,
due dates, grace periods' ends and midnights (and now and then back). After each step the
rating kept up to date by :func:`rerate` from the previous one must equal
:func:`programme_health` of the whole state at the clock's instant, field for field; then
it becomes the previous rating, so a difference would compound rather than hide.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.catalogue import Catalogue, load_catalogue
from shared.health import (
    EPSILON,
    ClockWatch,
    KpiObservation,
    MilestoneState,
    ProgrammeState,
    Touched,
    changed_state,
    programme_health,
    rerate,
    valid_until,
)
from shared.kinds.milestone import MILESTONE_STATUSES
from shared.periods import period_of

STEPS = 300


def generated_catalogue(rnd: random.Random) -> Catalogue:
    """Twelve proposals in three columns whose milestones follow milestones of earlier
    proposals (chains across proposals, with lags), and KPIs evidencing several."""
    proposals: list[dict[str, Any]] = []
    for i in range(12):
        milestones: list[dict[str, Any]] = []
        dues = sorted(date(2025, 3, 1) + timedelta(days=rnd.randrange(0, 240)) for _ in range(4))
        for j, due in enumerate(dues):
            follows = []
            for _ in range(rnd.choice((0, 0, 1, 1, 2))):
                q = rnd.randrange(i + 1)
                if q == i and j == 0:
                    continue
                n = rnd.randrange(j if q == i else 4)  # an earlier milestone: no cycle
                follow = {"milestone": f"m{n}", "lag": rnd.choice(("0d", "3d", "20d", "45d"))}
                if q != i:
                    follow["proposal"] = f"p{q}"
                if follow not in follows:
                    follows.append(follow)
            milestones.append(
                {"id": f"m{j}", "title": f"M {i}.{j}", "due": str(due), "follows": follows}
            )
        proposals.append(
            {
                "id": f"p{i}",
                "title": f"Proposal {i}",
                "priority": 1,
                "text": "Text.",
                "partners": ["auth-a"],
                "stall_threshold": rnd.choice(("5d", "12h", "30d", "36h")),
                "overdue_grace": rnd.choice(("7d", "1h", "36h", "14d")),
                "milestones": milestones,
            }
        )
    kpis = [
        {
            "id": f"k{n}",
            "title": f"KPI {n}",
            "unit": "jobs",
            "direction": rnd.choice(("up", "down")),
            "baseline": {"value": 100, "date": "2024-12-31"},
            "target": {"value": rnd.choice((50, 200)), "date": "2026-12-31"},
            "shape": rnd.choice(("linear", "compound")),
            "tolerance": 0.1,
            "evidences": sorted({f"p{rnd.randrange(12)}" for _ in range(3)}),
            "reporters": ["auth-a"],
            "source": "test",
        }
        for n in range(4)
    ]
    return Catalogue.model_validate(
        {
            "programme": "Generated programme",
            "status": "test",
            "programme_start": "2025-01-01",
            "columns": [
                {"id": f"c{c}", "title": f"C{c}", "proposals": [f"p{i}" for i in range(c, 12, 3)]}
                for c in range(3)
            ],
            "priorities": [{"id": 1, "title": "Priority", "text": "Text"}],
            "authorities": [{"id": "auth-a", "name": "Authority A", "kind": "combined_authority"}],
            "proposals": proposals,
            "kpis": kpis,
        }
    )


class History:
    """A random history over ``catalogue``: the projections' state, folded newest-wins."""

    def __init__(self, catalogue: Catalogue, rnd: random.Random, now: datetime) -> None:
        self.catalogue = catalogue
        self.rnd = rnd
        self.now = now
        self.seq = 0
        self.milestones: dict[tuple[str, str], tuple[datetime, int, MilestoneState]] = {}
        self.kpis: dict[tuple[str, str], tuple[datetime, int, KpiObservation]] = {}

    def when(self) -> datetime:
        """An event time: mostly recent, sometimes long past (a backfill), to the microsecond
        now and then (ties and near-ties of progress)."""
        r = self.rnd.random()
        if r < 0.15:
            return self.now  # at the clock's instant: ties between milestones
        if r < 0.6:
            return self.now - timedelta(seconds=self.rnd.randrange(0, 3 * 86400))
        return self.now - timedelta(days=self.rnd.randrange(0, 120), hours=self.rnd.randrange(24))

    def milestone_event(self) -> MilestoneState | None:
        p = self.rnd.choice(self.catalogue.proposals)
        m = self.rnd.choice(p.milestones)
        self.seq += 1
        t = self.when()
        s = MilestoneState(
            p.id, m.id, self.rnd.choice(MILESTONE_STATUSES), t, "auth-a", f"e{self.seq}", None
        )
        held = self.milestones.get((p.id, m.id))
        if held is not None and (held[0], held[1]) > (t, self.seq):
            return None  # the projection keeps the newer one
        self.milestones[(p.id, m.id)] = (t, self.seq, s)
        return s

    def kpi_event(self) -> KpiObservation | None:
        kpi = self.rnd.choice(self.catalogue.kpis)
        frequency = self.rnd.choice(("monthly", "quarterly", "annual"))
        day = self.now.date() - timedelta(days=self.rnd.randrange(0, 400))
        period = period_of(day, frequency)
        reported = [p for (k, p) in self.kpis if k == kpi.id]
        if reported and self.rnd.random() < 0.4:
            period = self.rnd.choice(reported)  # a correction of a reported period
        self.seq += 1
        t = self.when()
        value = float(self.rnd.choice((20, 60, 100, 130, 160, 250)))
        o = KpiObservation(kpi.id, period, value, t, "auth-a", f"k{self.seq}")
        held = self.kpis.get((kpi.id, period))
        if held is not None and (held[0], held[1]) > (t, self.seq):
            return None
        self.kpis[(kpi.id, period)] = (t, self.seq, o)
        return o

    def step(
        self, counts: Sequence[int], clock_moves: float, holds_until: datetime
    ) -> tuple[list[MilestoneState], list[KpiObservation]]:
        """One step: a number of events drawn from ``counts`` (three in four milestone
        events), and a clock move with chance ``clock_moves`` (always, when no event came)."""
        milestones: list[MilestoneState] = []
        observations: list[KpiObservation] = []
        for _ in range(self.rnd.choice(counts)):
            if self.rnd.random() < 0.75:
                milestones += [s] if (s := self.milestone_event()) else []
            else:
                observations += [o] if (o := self.kpi_event()) else []
        if self.rnd.random() < clock_moves or not (milestones or observations):
            self.clock_move(holds_until)
        return milestones, observations

    def clock_move(self, holds_until: datetime) -> None:
        r = self.rnd.random()
        midnight = datetime.combine(self.now.date() + timedelta(days=1), datetime.min.time(), UTC)
        if r < 0.15:
            self.now = holds_until  # exactly when the rating may change
        elif r < 0.25:
            self.now = holds_until - EPSILON  # just before
        elif r < 0.35:
            self.now = midnight - self.rnd.choice((EPSILON, timedelta(0)))
        elif r < 0.6:
            self.now += timedelta(seconds=self.rnd.randrange(1, 7200))
        elif r < 0.8:
            self.now += timedelta(hours=self.rnd.randrange(1, 30))
        elif r < 0.95:
            self.now += timedelta(days=self.rnd.randrange(1, 20), seconds=self.rnd.randrange(9))
        else:
            self.now -= timedelta(hours=self.rnd.randrange(1, 50))  # a clock set back


def run(catalogue: Catalogue, seed: int) -> tuple[int, int]:
    """Play a history; how many steps were rated incrementally and how many in all."""
    rnd = random.Random(seed)
    history = History(catalogue, rnd, datetime(2025, 2, 20, 9, 30, tzinfo=UTC))
    state = ProgrammeState()
    health = programme_health(catalogue, state, history.now)
    holds_until = valid_until(catalogue, state, history.now)
    watch = ClockWatch(catalogue)
    incremental = 0
    for step in range(STEPS):
        milestones, observations = history.step((0, 1, 1, 1, 2, 5), 0.5, holds_until)
        now = history.now
        state, touched = changed_state(state, milestones, observations)
        incremental += health.at <= now < holds_until
        health = rerate(catalogue, health, state, touched, now, holds_until=holds_until)
        full = programme_health(catalogue, state, now)
        assert health == full, f"seed {seed}, step {step}, at {now}, touched {touched}"
        # The state kept up to date is the state read whole.
        assert (
            state.milestones_by_proposal == ProgrammeState(state.milestones).milestones_by_proposal
        )
        holds_until = valid_until(catalogue, state, now)
        # Kept from one state to the next, the same instant as worked out whole.
        assert watch.valid_until(state, now) == holds_until, f"seed {seed}, step {step}"
    return incremental, STEPS


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_shipped_catalogue_rated_incrementally_is_rated_in_full(seed: int) -> None:
    incremental, steps = run(load_catalogue(), seed)
    assert incremental > steps // 4  # the incremental path was the one mostly exercised


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_a_catalogue_of_dependency_chains_rated_incrementally_is_rated_in_full(seed: int) -> None:
    catalogue = generated_catalogue(random.Random(seed))
    assert any(p != k[0] for k, preds in catalogue.predecessors.items() for (p, _), _ in preds)
    incremental, steps = run(catalogue, seed)
    assert incremental > steps // 4


def test_what_a_change_touches() -> None:
    catalogue = load_catalogue()
    s = MilestoneState(
        "1a", "cluster-evidence", "blocked", datetime(2025, 4, 1, tzinfo=UTC), "a", "e"
    )
    state, touched = changed_state(ProgrammeState(), [s])
    assert touched == Touched(frozenset({("1a", "cluster-evidence")}), frozenset())
    again, nothing = changed_state(state, [s])  # the same row again changes nothing
    assert nothing == Touched() and again.milestones == state.milestones
    assert catalogue.downstream([("1a", "cluster-evidence")]) >= {("1a", "cluster-evidence")}
