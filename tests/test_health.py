"""Unit tests of the health rules (shared/health.py) on a small catalogue and a fixed clock.

Every expected number below is worked out by hand from the test catalogue, so a change of
rule shows up as a changed table row rather than as a recomputation of the same formula.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.catalogue import Catalogue, load_catalogue
from shared.health import (
    EPSILON,
    NO_DEPENDENCIES,
    EventRef,
    KpiObservation,
    MilestoneState,
    ProgrammeHealth,
    ProgrammeState,
    Reason,
    dependencies,
    is_off_trajectory,
    kpi_expected,
    kpi_health,
    last_progress,
    latest_observation,
    programme_health,
    proposal_history,
    valid_until,
)

# Baseline and target dates are two non-leap years apart (730 days), so the end of the year
# 2025 is exactly the midpoint: the KPI period "2025" reads the trajectory at f = 1/2.
CATALOGUE = Catalogue.model_validate(
    {
        "programme": "Test programme",
        "status": "test",
        "programme_start": "2025-01-01",
        "columns": [
            {"id": "alpha", "title": "Alpha", "proposals": ["p1", "p2"]},
            {"id": "beta", "title": "Beta", "proposals": ["g1"]},
        ],
        "priorities": [{"id": 1, "title": "Priority", "text": "Text"}],
        "authorities": [{"id": "auth-a", "name": "Authority A", "kind": "combined_authority"}],
        "proposals": [
            {
                "id": "p1",
                "title": "First proposal",
                "priority": 1,
                "text": "Do the first thing.",
                "partners": ["auth-a"],
                "stall_threshold": "10d",
                "overdue_grace": "7d",
                "milestones": [
                    {"id": "m1", "title": "Plan agreed", "due": "2025-03-31"},
                    {"id": "m2", "title": "Programme live", "due": "2025-12-31"},
                ],
            },
            {
                "id": "p2",
                "title": "Second proposal",
                "priority": 1,
                "text": "Do the second thing.",
                "partners": ["auth-a"],
                "stall_threshold": "10d",
                "overdue_grace": "7d",
                "milestones": [{"id": "n1", "title": "Fund open", "due": "2025-06-30"}],
            },
            {
                "id": "g1",
                "kind": "gamechanger",
                "title": "A gamechanger",
                "text": "Change the game.",
                "partners": ["auth-a"],
                "stall_threshold": "30d",
                "milestones": [{"id": "x1", "title": "Institute open", "due": "2026-06-30"}],
            },
        ],
        "kpis": [
            {
                "id": "k-linear",
                "title": "Linear jobs",
                "unit": "jobs",
                "direction": "up",
                "baseline": {"value": 100, "date": "2024-12-31"},
                "target": {"value": 200, "date": "2026-12-31"},
                "shape": "linear",
                "tolerance": 0.25,
                "evidences": ["p1"],
                "reporters": ["auth-a"],
                "source": "test",
            },
            {
                "id": "k-compound",
                "title": "Compound waiting days",
                "unit": "days",
                "direction": "down",
                "baseline": {"value": 400, "date": "2024-12-31"},
                "target": {"value": 100, "date": "2026-12-31"},
                "shape": "compound",
                "tolerance": 0.25,
                "evidences": ["p2"],
                "reporters": ["auth-a"],
                "source": "test",
            },
        ],
    }
)
P1 = CATALOGUE.proposal_by_id["p1"]
K_LINEAR = CATALOGUE.kpi_by_id["k-linear"]
K_COMPOUND = CATALOGUE.kpi_by_id["k-compound"]

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
START = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def at(text: str) -> datetime:
    """An aware UTC instant from ISO text, to keep the tables short."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ms(milestone: str, status: str, when: datetime, proposal: str = "p1") -> MilestoneState:
    return MilestoneState(proposal, milestone, status, when, "auth-a", f"e-{milestone}-{when}")


def obs(kpi: str, period: str, value: float, when: datetime = NOW) -> KpiObservation:
    return KpiObservation(kpi, period, value, when, "auth-a")


def state(*milestones: MilestoneState, kpis: tuple[KpiObservation, ...] = ()) -> ProgrammeState:
    grouped: dict[str, list[KpiObservation]] = {}
    for o in kpis:
        grouped.setdefault(o.kpi, []).append(o)
    return ProgrammeState(
        milestones={(m.proposal, m.milestone): m for m in milestones}, kpi_observations=grouped
    )


def p1_health(st: ProgrammeState, now: datetime = NOW):
    return programme_health(CATALOGUE, st, now).proposals["p1"]


# --- RAG: one row per reason, plus combinations -------------------------------------------

RAG_CASES = [
    # id, state, now, rag, [(rule, rag, milestone, kpi)]
    ("green", state(ms("m1", "in_progress", NOW - DAY)), NOW, "green", []),
    (
        "blocked is red",
        state(ms("m1", "blocked", NOW - DAY)),
        NOW,
        "red",
        [("milestone_blocked", "red", "m1", None)],
    ),
    (
        "overdue beyond grace is red",
        state(ms("m1", "in_progress", at("2025-04-07T00:00"))),
        at("2025-04-08T00:00"),
        "red",
        [("milestone_overdue_beyond_grace", "red", "m1", None)],
    ),
    (
        "stalled is red",
        state(ms("m1", "in_progress", NOW - 11 * DAY)),
        NOW,
        "red",
        [("stalled", "red", None, None)],
    ),
    (
        "at risk is amber",
        state(ms("m1", "at_risk", NOW - DAY)),
        NOW,
        "amber",
        [("milestone_at_risk", "amber", "m1", None)],
    ),
    (
        "overdue from the day after the due date is amber",
        state(ms("m1", "in_progress", at("2025-03-31T00:00"))),
        at("2025-04-01T00:00"),
        "amber",
        [("milestone_overdue", "amber", "m1", None)],
    ),
    (
        "overdue on the last instant of grace is still amber",
        state(ms("m1", "in_progress", at("2025-04-07T00:00"))),
        at("2025-04-07T23:59:59"),
        "amber",
        [("milestone_overdue", "amber", "m1", None)],
    ),
    (
        "evidenced KPI off trajectory is amber",
        # Period 2024 ends on the baseline date: expected 100, slack 25, so 70 is off.
        state(ms("m1", "in_progress", NOW - DAY), kpis=(obs("k-linear", "2024", 70),)),
        NOW,
        "amber",
        [("kpi_off_trajectory", "amber", None, "k-linear")],
    ),
    (
        "evidenced KPI at the tolerance edge is green",
        state(ms("m1", "in_progress", NOW - DAY), kpis=(obs("k-linear", "2024", 75),)),
        NOW,
        "green",
        [],
    ),
    (
        "a KPI evidencing another proposal does not colour this one",
        state(ms("m1", "in_progress", NOW - DAY), kpis=(obs("k-compound", "2024", 1000),)),
        NOW,
        "green",
        [],
    ),
    (
        "progress older than half the threshold is amber",
        state(ms("m1", "in_progress", NOW - 6 * DAY)),
        NOW,
        "amber",
        [("progress_ageing", "amber", None, None)],
    ),
    (
        "progress exactly half the threshold old is green",
        state(ms("m1", "in_progress", NOW - 5 * DAY)),
        NOW,
        "green",
        [],
    ),
    (
        "red wins over amber and every reason is listed",
        state(ms("m1", "blocked", NOW - DAY), ms("m2", "at_risk", NOW - DAY)),
        NOW,
        "red",
        [("milestone_blocked", "red", "m1", None), ("milestone_at_risk", "amber", "m2", None)],
    ),
    (
        "at risk and overdue within grace give two reasons",
        state(ms("m1", "at_risk", at("2025-04-01T12:00"))),
        at("2025-04-02T00:00"),
        "amber",
        [("milestone_overdue", "amber", "m1", None), ("milestone_at_risk", "amber", "m1", None)],
    ),
    (
        "all completed: never overdue, stalled or ageing",
        state(ms("m1", "completed", at("2025-02-01T00:00")), ms("m2", "completed", START)),
        at("2027-01-01T00:00"),
        "green",
        [],
    ),
]


@pytest.mark.parametrize(
    ("st", "now", "rag", "reasons"),
    [pytest.param(*case[1:], id=case[0]) for case in RAG_CASES],
)
def test_rag(st: ProgrammeState, now: datetime, rag: str, reasons: list[tuple]) -> None:
    health = p1_health(st, now)
    assert health.rag == rag
    assert [(r.rule, r.rag, r.milestone, r.kpi) for r in health.reasons] == reasons


def test_reasons_name_the_milestone_and_kpi_in_their_detail() -> None:
    st = state(
        ms("m1", "blocked", at("2025-04-10T00:00")),
        ms("m2", "at_risk", at("2025-04-10T00:00")),
        kpis=(obs("k-linear", "2024", 70),),
    )
    health = p1_health(st, at("2025-04-10T12:00"))
    by_rule = {r.rule: r for r in health.reasons}
    assert "Plan agreed" in by_rule["milestone_blocked"].detail
    assert by_rule["milestone_blocked"].since == at("2025-04-10T00:00")
    assert "Plan agreed" in by_rule["milestone_overdue_beyond_grace"].detail
    assert "2025-03-31" in by_rule["milestone_overdue_beyond_grace"].detail
    assert "Programme live" in by_rule["milestone_at_risk"].detail
    assert by_rule["kpi_off_trajectory"].detail == ("Linear jobs: 70 in 2024 against 100 expected")


# --- stall -------------------------------------------------------------------------------

STALL_CASES = [
    # id, state, now, stalled, last progress, has progress
    ("recent event", state(ms("m1", "in_progress", NOW - DAY)), NOW, False, NOW - DAY, True),
    (
        "quiet exactly the threshold",
        state(ms("m1", "in_progress", NOW - 10 * DAY)),
        NOW,
        False,
        NOW - 10 * DAY,
        True,
    ),
    (
        "quiet beyond the threshold",
        state(ms("m1", "in_progress", NOW - 10 * DAY - timedelta(seconds=1))),
        NOW,
        True,
        NOW - 10 * DAY - timedelta(seconds=1),
        True,
    ),
    (
        "the newest milestone event counts",
        state(ms("m1", "in_progress", NOW - 20 * DAY), ms("m2", "not_started", NOW - 2 * DAY)),
        NOW,
        False,
        NOW - 2 * DAY,
        True,
    ),
    (
        "a completion is progress",
        state(ms("m1", "completed", NOW - 2 * DAY)),
        NOW,
        False,
        NOW - 2 * DAY,
        True,
    ),
    (
        "all milestones completed never stall",
        state(ms("m1", "completed", START), ms("m2", "completed", START)),
        START + 365 * DAY,
        False,
        START,
        True,
    ),
    ("no events: counted from programme start", state(), START + 10 * DAY, False, START, False),
    (
        "no events: stalled after the threshold from programme start",
        state(),
        START + 10 * DAY + timedelta(seconds=1),
        True,
        START,
        False,
    ),
    (
        "another proposal's events are not this one's progress",
        state(ms("n1", "in_progress", NOW - DAY, proposal="p2")),
        NOW,
        True,
        START,
        False,
    ),
    (
        "an event for a milestone not in the catalogue is ignored",
        state(ms("gone", "in_progress", NOW - DAY)),
        NOW,
        True,
        START,
        False,
    ),
]


@pytest.mark.parametrize(
    ("st", "now", "stalled", "progress", "has_progress"),
    [pytest.param(*case[1:], id=case[0]) for case in STALL_CASES],
)
def test_stall(
    st: ProgrammeState, now: datetime, stalled: bool, progress: datetime, has_progress: bool
) -> None:
    health = p1_health(st, now)
    assert health.stalled is stalled
    assert health.last_progress == progress
    assert health.has_progress is has_progress
    assert health.stall_threshold == timedelta(days=10)
    assert ("stalled" in {r.rule for r in health.reasons}) is stalled


def test_stalled_reason_dates_from_last_progress() -> None:
    health = p1_health(state(), START + 11 * DAY)
    (reason,) = health.reasons
    assert (reason.rule, reason.since) == ("stalled", START)
    assert reason.detail == "no milestone event for 11 days, stall threshold 10 days"


def test_last_progress_without_events_is_programme_start_midnight_utc() -> None:
    assert last_progress(P1, state(), date(2025, 1, 1)) == (START, False)


# --- overdue -----------------------------------------------------------------------------

OVERDUE_CASES = [
    # id, m1 status (None: no event), now, overdue, overdue beyond grace
    ("before the due date", "in_progress", "2025-03-30T12:00", False, False),
    ("the due date itself", "in_progress", "2025-03-31T00:00", False, False),
    ("the last instant of the due date", "in_progress", "2025-03-31T23:59:59", False, False),
    ("the day after", "in_progress", "2025-04-01T00:00", True, False),
    ("the last instant of grace", "in_progress", "2025-04-07T23:59:59", True, False),
    ("grace over", "in_progress", "2025-04-08T00:00", True, True),
    ("never reported", None, "2025-04-02T00:00", True, False),
    ("blocked", "blocked", "2025-04-02T00:00", True, False),
    ("completed late is not overdue", "completed", "2025-06-01T00:00", False, False),
]


@pytest.mark.parametrize(
    ("status", "now", "overdue", "beyond"),
    [pytest.param(*case[1:], id=case[0]) for case in OVERDUE_CASES],
)
def test_overdue(status: str | None, now: str, overdue: bool, beyond: bool) -> None:
    st = state(ms("m1", status, at("2025-03-30T00:00"))) if status else state()
    health = p1_health(st, at(now))
    m1, m2 = health.milestones
    assert (m1.overdue, m1.overdue_beyond_grace) == (overdue, beyond)
    assert m1.status == (status or "not_started")
    assert not m2.overdue
    assert health.overdue == (["m1"] if overdue else [])


def test_milestone_health_carries_the_stored_state() -> None:
    st = state(ms("m1", "at_risk", NOW - DAY))
    m1, m2 = p1_health(st).milestones
    assert (m1.id, m1.title, m1.due, m1.status) == (
        "m1",
        "Plan agreed",
        date(2025, 3, 31),
        "at_risk",
    )
    assert (m1.updated_at, m1.source) == (NOW - DAY, "auth-a")
    assert (m2.status, m2.updated_at, m2.source, m2.note) == ("not_started", None, None, None)


def test_milestone_counts() -> None:
    health = p1_health(state(ms("m1", "completed", NOW - DAY)))
    assert health.milestone_counts == {"completed": 1, "not_started": 1}


# --- KPI trajectories --------------------------------------------------------------------

TRAJECTORY_CASES = [
    # id, kpi, date, expected (by hand)
    ("linear before baseline", K_LINEAR, date(2023, 6, 30), 100.0),
    ("linear at baseline", K_LINEAR, date(2024, 12, 31), 100.0),
    ("linear at midpoint", K_LINEAR, date(2025, 12, 31), 150.0),
    ("linear at target", K_LINEAR, date(2026, 12, 31), 200.0),
    ("linear after target", K_LINEAR, date(2030, 1, 1), 200.0),
    ("compound before baseline", K_COMPOUND, date(2023, 6, 30), 400.0),
    ("compound at baseline", K_COMPOUND, date(2024, 12, 31), 400.0),
    # 400 * (100 / 400) ** 0.5 = 400 * 0.5: constant growth halves the gap in ratio, not in value
    ("compound at midpoint", K_COMPOUND, date(2025, 12, 31), 200.0),
    ("compound at target", K_COMPOUND, date(2026, 12, 31), 100.0),
    ("compound after target", K_COMPOUND, date(2030, 1, 1), 100.0),
]


@pytest.mark.parametrize(
    ("kpi", "day", "expected"), [pytest.param(*case[1:], id=case[0]) for case in TRAJECTORY_CASES]
)
def test_kpi_expected(kpi, day: date, expected: float) -> None:
    assert kpi_expected(kpi, day) == pytest.approx(expected, rel=1e-12)


def test_compound_rising() -> None:
    # 100 -> 400 over the same dates: 100 * 4 ** 0.5 = 200 at the midpoint, where linear gives 250.
    target = K_LINEAR.target.model_copy(update={"value": 400.0})
    rising = K_LINEAR.model_copy(update={"shape": "compound", "target": target})
    assert kpi_expected(rising, date(2025, 12, 31)) == pytest.approx(200.0)
    assert kpi_expected(rising, date(2024, 12, 31)) == pytest.approx(100.0)
    assert kpi_expected(rising, date(2026, 12, 31)) == pytest.approx(400.0)


TOLERANCE_CASES = [
    # id, kpi, actual, expected, off
    ("up: on the line", K_LINEAR, 150.0, 150.0, False),
    ("up: better", K_LINEAR, 1000.0, 150.0, False),
    ("up: at the tolerance edge (150 - 25% of 150)", K_LINEAR, 112.5, 150.0, False),
    ("up: just beyond the edge", K_LINEAR, 112.49, 150.0, True),
    ("down: on the line", K_COMPOUND, 200.0, 200.0, False),
    ("down: better", K_COMPOUND, 10.0, 200.0, False),
    ("down: at the tolerance edge (200 + 25% of 200)", K_COMPOUND, 250.0, 200.0, False),
    ("down: just beyond the edge", K_COMPOUND, 250.01, 200.0, True),
    # With nothing expected yet, the slack is a fraction of the target instead.
    ("up: expected zero, slack from target", K_LINEAR, -50.0, 0.0, False),
    ("up: expected zero, beyond target slack", K_LINEAR, -50.01, 0.0, True),
]


@pytest.mark.parametrize(
    ("kpi", "actual", "expected", "off"),
    [pytest.param(*case[1:], id=case[0]) for case in TOLERANCE_CASES],
)
def test_is_off_trajectory(kpi, actual: float, expected: float, off: bool) -> None:
    assert is_off_trajectory(kpi, actual, expected) is off


KPI_HEALTH_CASES = [
    # id, kpi, observations, expected_at_actual, on_track
    ("linear up, 2025 on track at the edge", K_LINEAR, [("2025", 112.5)], 150.0, True),
    ("linear up, 2025 off", K_LINEAR, [("2025", 112.0)], 150.0, False),
    ("linear up, before baseline", K_LINEAR, [("2023", 80.0)], 100.0, True),
    ("linear up, after target", K_LINEAR, [("2028", 149.0)], 200.0, False),
    ("compound down, 2025 at the edge", K_COMPOUND, [("2025", 250.0)], 200.0, True),
    ("compound down, 2025 off", K_COMPOUND, [("2025", 251.0)], 200.0, False),
    ("compound down, at target", K_COMPOUND, [("2026", 120.0)], 100.0, True),
    ("compound down, quarter Q4 ends at midpoint", K_COMPOUND, [("2025-Q4", 199.0)], 200.0, True),
    ("no observation", K_LINEAR, [], None, None),
]


@pytest.mark.parametrize(
    ("kpi", "observations", "expected_at", "on_track"),
    [pytest.param(*case[1:], id=case[0]) for case in KPI_HEALTH_CASES],
)
def test_kpi_health(kpi, observations, expected_at: float | None, on_track: bool | None) -> None:
    now = at("2025-12-31T12:00")
    h = kpi_health(kpi, [obs(kpi.id, p, v) for p, v in observations], now)
    assert h.on_track is on_track
    assert h.expected_at_actual == (None if expected_at is None else pytest.approx(expected_at))
    assert h.expected_now == pytest.approx(150.0 if kpi is K_LINEAR else 200.0)
    assert (h.target, h.target_date) == (kpi.target.value, kpi.target.date)
    assert (h.baseline, h.baseline_date) == (kpi.baseline.value, kpi.baseline.date)
    if observations:
        assert (h.actual_period, h.actual) == observations[-1]
        assert h.reported_at == NOW
    else:
        assert (h.actual, h.actual_period, h.reported_at) == (None, None, None)


# --- latest observation ------------------------------------------------------------------

T0 = at("2025-06-01T00:00")

LATEST_CASES = [
    # id, observations (period, value, reported at), expected (period, value)
    ("none", [], None),
    ("one", [("2025-Q1", 1.0, T0)], ("2025-Q1", 1.0)),
    (
        "the latest period wins over a later report of an earlier period",
        [("2025-Q3", 3.0, T0), ("2025-07", 7.0, T0 + DAY)],
        ("2025-Q3", 3.0),
    ),
    (
        "a year, its Q4 and its December end together: the newest report wins",
        [("2025-Q4", 4.0, T0 + DAY), ("2025", 5.0, T0 + 3 * DAY), ("2025-12", 12.0, T0 + 2 * DAY)],
        ("2025", 5.0),
    ),
    (
        "a restatement of the same period replaces the older report",
        [("2025-Q2", 9.0, T0 + 2 * DAY), ("2025-Q2", 8.0, T0 + DAY)],
        ("2025-Q2", 9.0),
    ),
    (
        "a backfilled older period does not displace the newer one",
        [("2026-01", 1.0, T0), ("2025", 2.0, T0 + 30 * DAY)],
        ("2026-01", 1.0),
    ),
]


@pytest.mark.parametrize(
    ("observations", "expected"), [pytest.param(*case[1:], id=case[0]) for case in LATEST_CASES]
)
def test_latest_observation(observations, expected) -> None:
    latest = latest_observation([obs("k-linear", p, v, when) for p, v, when in observations])
    assert (None if latest is None else (latest.period, latest.value)) == expected


# --- the whole programme -----------------------------------------------------------------


def test_programme_health_rates_every_proposal_and_kpi() -> None:
    health = programme_health(CATALOGUE, state(), NOW)
    assert health.at == NOW
    assert list(health.proposals) == ["p1", "p2", "g1"]
    assert list(health.kpis) == ["k-linear", "k-compound"]
    assert {p.id: p.column for p in health.proposals.values()} == {
        "p1": "alpha",
        "p2": "alpha",
        "g1": "beta",
    }
    # g1 has a 30-day threshold: 73 quiet days stall it too.
    assert all(p.stalled for p in health.proposals.values())


def test_health_depends_on_the_instant_not_the_clock_timezone() -> None:
    # 2026-01-01T06:00Z is still 2025-12-31 in UTC-10; the rules read dates in UTC.
    instant = at("2026-01-01T06:00")
    honolulu = instant.astimezone(timezone(timedelta(hours=-10)))
    st = state(ms("m1", "completed", instant - DAY), ms("m2", "in_progress", instant - DAY))
    utc_view = programme_health(CATALOGUE, st, instant)
    local_view = programme_health(CATALOGUE, st, honolulu)
    assert local_view.kpis["k-linear"].expected_now == utc_view.kpis["k-linear"].expected_now
    assert utc_view.proposals["p1"].overdue == local_view.proposals["p1"].overdue == ["m2"]


# Dependencies, on the shipped catalogue's draft chains.

SHIPPED = load_catalogue()


def _done(proposal: str, milestone: str, status: str, when: datetime) -> MilestoneState:
    return MilestoneState(proposal, milestone, status, when, "greater-manchester", f"e-{milestone}")


def _rate(now: datetime, *states: MilestoneState) -> ProgrammeHealth:
    st = ProgrammeState(milestones={(s.proposal, s.milestone): s for s in states})
    return programme_health(SHIPPED, st, now)


def _milestone(health: ProgrammeHealth, pid: str, mid: str) -> Any:
    return next(m for m in health.proposals[pid].milestones if m.id == mid)


def _dependency_reasons(health: ProgrammeHealth, pid: str) -> list[Reason]:
    return [r for r in health.proposals[pid].reasons if r.rule == "milestone_dependency_at_risk"]


def test_forecast_is_the_due_date_until_pushed() -> None:
    health = _rate(datetime(2025, 5, 1, tzinfo=UTC))
    m = _milestone(health, "1a", "pilot-agreement")
    assert (m.forecast, m.upstream_risk) == (date(2026, 9, 30), None)
    assert _dependency_reasons(health, "1a") == []


def test_a_late_upstream_puts_its_dependant_at_risk_with_the_day_it_began() -> None:
    # 3b/network-terms (due 30 June 2025) is unfinished on 5 October: it cannot finish
    # before today, and 1a/cluster-evidence (due 31 October) follows it by 30 days.
    now = datetime(2025, 10, 5, 12, tzinfo=UTC)
    health = _rate(now)
    m = _milestone(health, "1a", "cluster-evidence")
    assert m.forecast == date(2025, 11, 4)
    (reason,) = _dependency_reasons(health, "1a")
    assert (reason.rag, reason.milestone, reason.chain) == (
        "amber",
        "cluster-evidence",
        ("3b/network-terms", "1a/cluster-evidence"),
    )
    # From the first day on which today plus the lag passed the due date.
    assert reason.since == datetime(2025, 10, 2, tzinfo=UTC)
    assert "at risk because of 3b/network-terms, which is late" in reason.detail
    assert "forecast 2025-11-04 against due 2025-10-31" in reason.detail


def test_lateness_runs_down_the_chain_naming_all_of_it() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    uk = _done("2a", "innovate-uk-agreement", "completed", datetime(2025, 12, 1, tzinfo=UTC))
    health = _rate(now, uk)
    # spending-review-case (due 31 March 2026) unfinished: pilot-agreement (+90 days) is
    # pushed to 1 March 2027, and 2a's local programmes (due 31 December 2026) follow it.
    assert _milestone(health, "1a", "pilot-agreement").forecast == date(2027, 3, 1)
    local = _milestone(health, "2a", "local-programmes-live")
    assert local.forecast == date(2027, 3, 1)
    reasons = {r.milestone: r for r in _dependency_reasons(health, "2a")}
    assert reasons["local-programmes-live"].chain == (
        "1a/spending-review-case",
        "1a/pilot-agreement",
        "2a/local-programmes-live",
    )
    # Completing the root (late, on 15 March 2026) leaves the pilot overdue by itself, but
    # its forecast (today) no longer pushes 2a past its due date.
    root = _done("1a", "spending-review-case", "completed", datetime(2026, 3, 15, tzinfo=UTC))
    health = _rate(now, uk, root)
    assert _milestone(health, "2a", "local-programmes-live").upstream_risk is None
    assert _milestone(health, "1a", "pilot-agreement").forecast == date(2026, 12, 1)


def test_a_blocked_upstream_puts_every_dependant_at_risk_at_once() -> None:
    now = datetime(2025, 6, 10, tzinfo=UTC)
    blocked = _done("3b", "network-terms", "blocked", datetime(2025, 6, 9, tzinfo=UTC))
    health = _rate(now, blocked)
    (reason,) = _dependency_reasons(health, "1a")
    assert reason.chain == ("3b/network-terms", "1a/cluster-evidence")
    assert reason.since == datetime(2025, 6, 9, tzinfo=UTC)
    assert [(e.source, e.id) for e in reason.events] == [("greater-manchester", "e-network-terms")]
    assert "which is blocked" in reason.detail
    # Completed: no forecast, no risk.
    done = _done("3b", "network-terms", "completed", datetime(2025, 6, 9, tzinfo=UTC))
    health = _rate(now, done)
    assert _dependency_reasons(health, "1a") == []
    assert _milestone(health, "3b", "network-terms").forecast is None


def test_a_catalogue_without_dependencies_costs_nothing() -> None:
    assert dependencies(CATALOGUE, ProgrammeState(), START) is NO_DEPENDENCIES


def test_history_marks_clock_changes() -> None:
    proposal = CATALOGUE.proposal_by_id["p1"]
    event = MilestoneState("p1", "m1", "in_progress", START + 2 * DAY, "a", "e1")
    entries = proposal_history(CATALOGUE, proposal, [event], [], START + 40 * DAY)
    # The event on day 2 changes nothing (green before and after): no entry. Time alone
    # then ages its progress (half the 10-day threshold) and stalls it.
    assert [(e.at, e.cause, e.health.rag, e.health.stalled, e.changed) for e in entries] == [
        (START, "clock", "green", False, ()),
        (START + 7 * DAY + EPSILON, "clock", "amber", False, ("rag",)),
        (START + 12 * DAY + EPSILON, "clock", "red", True, ("rag", "stalled")),
    ]
    # Blocked on day 20: an entry caused by the event, naming it.
    blocked = MilestoneState("p1", "m1", "blocked", START + 20 * DAY, "a", "e2")
    entries = proposal_history(CATALOGUE, proposal, [event, blocked], [], START + 21 * DAY)
    last = entries[-1]
    assert (last.at, last.cause, last.events) == (START + 20 * DAY, "event", (EventRef("a", "e2"),))


# --- valid_until: how long a rating holds ---------------------------------------------

# Hours, not days: thresholds, half thresholds and a grace that fall inside a day.
HOURLY = Catalogue.model_validate(
    {
        "programme": "Hourly programme",
        "status": "test",
        "programme_start": "2025-01-01",
        "columns": [{"id": "alpha", "title": "Alpha", "proposals": ["h1", "h2"]}],
        "priorities": [{"id": 1, "title": "Priority", "text": "Text"}],
        "authorities": [{"id": "auth-a", "name": "Authority A", "kind": "combined_authority"}],
        "proposals": [
            {
                "id": pid,
                "title": f"Proposal {pid}",
                "priority": 1,
                "text": "Text.",
                "partners": ["auth-a"],
                "stall_threshold": threshold,
                "overdue_grace": "30h",
                "milestones": [
                    {"id": "a", "title": "A", "due": "2025-03-10"},
                    {"id": "b", "title": "B", "due": "2025-03-20"},
                ],
            }
            for pid, threshold in (("h1", "30h"), ("h2", "7h"))
        ],
        "kpis": [],
    }
)


def _ratings(catalogue: Catalogue, st: ProgrammeState, now: datetime) -> tuple[object, object]:
    """What a rating says, without the instant it was made at."""
    health = programme_health(catalogue, st, now)
    return health.proposals, health.kpis


def _random_state(catalogue: Catalogue, rng: random.Random, around: datetime) -> ProgrammeState:
    statuses = ["in_progress", "at_risk", "blocked", "completed"]
    milestones = {}
    for p in catalogue.proposals:
        for m in p.milestones:
            if rng.random() < 0.4:
                when = around - timedelta(seconds=rng.randrange(0, 120 * 86400))
                state_ = MilestoneState(p.id, m.id, rng.choice(statuses), when, "auth-a", "e")
                milestones[(p.id, m.id)] = state_
    observations: dict[str, list[KpiObservation]] = {}
    for k in catalogue.kpis:
        if rng.random() < 0.5:
            value = rng.uniform(0.5, 1.5) * k.target.value
            observations[k.id] = [KpiObservation(k.id, "2025", value, around, "auth-a", "k")]
    return ProgrammeState(milestones=milestones, kpi_observations=observations)


@pytest.mark.parametrize(
    "catalogue", [CATALOGUE, HOURLY, SHIPPED], ids=["test", "hourly", "shipped"]
)
def test_a_rating_holds_until_valid_until(catalogue: Catalogue) -> None:
    rng = random.Random(16)
    for _ in range(60):
        now = START + timedelta(
            seconds=rng.randrange(0, 200 * 86400), microseconds=rng.randrange(10**6)
        )
        st = _random_state(catalogue, rng, now)
        until = valid_until(catalogue, st, now)
        assert now < until <= datetime.combine(now.date() + DAY, datetime.min.time(), UTC)
        rated = _ratings(catalogue, st, now)
        span = until - now
        for instant in (until - EPSILON, now + span / 2, now + span * rng.random()):
            assert _ratings(catalogue, st, instant) == rated, (now, instant, until)


def test_valid_until_is_the_instant_a_stall_begins() -> None:
    # h2 (7 h threshold) last reported at 09:00: ageing after 12:30, stalled after 16:00.
    progress = at("2025-03-05T09:00")
    st = state(
        ms("a", "in_progress", progress, proposal="h2"),
        ms("a", "completed", progress, proposal="h1"),
        ms("b", "completed", progress, proposal="h1"),
    )
    now = at("2025-03-05T13:00")
    ageing = _ratings(HOURLY, st, now)[0]["h2"]
    assert (ageing.rag, ageing.stalled) == ("amber", False)
    # The ageing reason counts whole hours: "4 hours" until 14:00.
    assert valid_until(HOURLY, st, now) == at("2025-03-05T14:00")
    # At 16:00 the count says "7 hours"; a microsecond later the quiet time is over the
    # threshold (the rule compares strictly) and h2 is stalled.
    assert valid_until(HOURLY, st, at("2025-03-05T15:30")) == at("2025-03-05T16:00")
    until = valid_until(HOURLY, st, at("2025-03-05T16:00"))
    assert until == progress + timedelta(hours=7) + EPSILON
    before, after = (_ratings(HOURLY, st, t)[0]["h2"] for t in (until - EPSILON, until))
    assert (before.stalled, after.stalled, after.rag) == (False, True, "red")


def test_valid_until_is_the_end_of_a_grace_inside_a_day() -> None:
    # h1's milestone a was due on 10 March: overdue from 11 March, beyond its 30 h grace at
    # 06:00 on 12 March; progress kept fresh so no stall rule moves meanwhile.
    st = state(ms("b", "in_progress", at("2025-03-12T01:00"), proposal="h1"))
    now = at("2025-03-12T02:00")
    until = valid_until(HOURLY, st, now)
    assert until == at("2025-03-12T06:00")
    before, after = (_ratings(HOURLY, st, t)[0]["h1"] for t in (until - EPSILON, until))
    assert (before.rag, after.rag) == ("amber", "red")


def test_a_finished_programme_changes_only_at_midnight() -> None:
    done = [
        ms(m.id, "completed", NOW - DAY, proposal=p.id)
        for p in CATALOGUE.proposals
        for m in p.milestones
    ]
    assert valid_until(CATALOGUE, state(*done), NOW) == at("2025-03-16T00:00")
