"""Obligations, return states, completeness and silent reporters: the pure rules."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from shared.catalogue import Catalogue, Window
from shared.reporting import (
    Obligation,
    completeness,
    extra_returns,
    obligations,
    silent_reporters,
    statuses,
    update_period,
)

# The shipped draft: KPIs quarterly, due 30 days after the quarter; updates quarterly, 14.
Q1_DUE = date(2025, 4, 30)
Q2_DUE = date(2025, 7, 30)


def _with_window(catalogue: Catalogue, kpi_id: str, window: Window) -> Catalogue:
    kpis = [
        k.model_copy(update={"returns": k.returns.model_copy(update={"windows": [window]})})
        if k.id == kpi_id and k.returns
        else k
        for k in catalogue.kpis
    ]
    return catalogue.model_copy(update={"kpis": kpis})


def _of(owed: list[Obligation], kind: str, ref: str, authority: str) -> list[str]:
    return [o.period for o in owed if (o.kind, o.ref, o.authority) == (kind, ref, authority)]


def test_every_reporter_owes_each_started_period_from_the_programme_start(
    catalogue: Catalogue,
) -> None:
    owed = obligations(catalogue, date(2025, 5, 1))
    reporters = sum(len(set(k.reporters)) for k in catalogue.kpis)
    leads = sum(len(p.updates.by) for p in catalogue.proposals if p.updates)
    # Q1 (holding the start, 2025-03-01) and Q2 (started on 1 April).
    assert len(owed) == 2 * (reporters + leads)
    assert _of(owed, "kpi", "exports", "cumbria") == ["2025-Q1", "2025-Q2"]
    q1 = next(o for o in owed if o.key == ("kpi", "exports", "cumbria", "2025-Q1"))
    assert (q1.due, q1.column) == (Q1_DUE, "business")
    lead = next(o for o in owed if o.key == ("update", "2b", "northern-gritstone", "2025-Q2"))
    assert (lead.due, lead.column) == (date(2025, 7, 14), "collaboration")


def test_a_reporter_window_bounds_what_it_owes(catalogue: Catalogue) -> None:
    left = _with_window(catalogue, "exports", Window(authority="cumbria", until=date(2025, 6, 1)))
    assert _of(obligations(left, date(2026, 1, 1)), "kpi", "exports", "cumbria") == [
        "2025-Q1",
        "2025-Q2",
    ]
    joined = _with_window(
        catalogue, "exports", Window(authority="cumbria", since=date(2025, 10, 15))
    )
    assert _of(obligations(joined, date(2026, 1, 1)), "kpi", "exports", "cumbria") == [
        "2025-Q4",
        "2026-Q1",
    ]
    # Others are untouched.
    assert len(_of(obligations(joined, date(2026, 1, 1)), "kpi", "exports", "np11")) == 5


def test_on_time_is_judged_by_when_the_return_was_received(catalogue: Catalogue) -> None:
    owed = [o for o in obligations(catalogue, date(2025, 8, 1)) if o.ref == "exports"]
    key = ("kpi", "exports", "np11", "2025-Q1")
    late_key = ("kpi", "exports", "np11", "2025-Q2")
    received = {
        key: datetime(2025, 4, 30, 23, 59, 59, tzinfo=UTC),  # the last second of the due day
        late_key: datetime(2025, 7, 31, 0, 0, tzinfo=UTC),  # the first second after
    }
    states = {s.obligation.key: s.state for s in statuses(owed, received, date(2025, 8, 1))}
    assert states[key] == "on_time"
    assert states[late_key] == "late"
    assert states[("kpi", "exports", "cumbria", "2025-Q1")] == "missing"
    # Before its due day has passed, a return not received is pending, not missing.
    early = statuses(owed, {}, Q2_DUE)
    assert {s.state for s in early if s.obligation.period == "2025-Q2"} == {"pending"}


def test_rates_never_exceed_one_and_extra_returns_are_counted_apart(
    catalogue: Catalogue,
) -> None:
    today = date(2025, 8, 1)
    owed = [o for o in obligations(catalogue, today) if o.authority == "northern-gritstone"]
    stamp = datetime(2025, 4, 2, tzinfo=UTC)
    received = {o.key: stamp for o in owed if o.period == "2025-Q1"}
    # A second partner's milestone events are welcome, but nobody owed them.
    received[("update", "2b", "northern-gritstone", "2024-Q4")] = stamp
    extra = extra_returns(owed, received)
    assert extra == [("update", "2b", "northern-gritstone", "2024-Q4")]
    rows = {r.period: r for r in completeness(statuses(owed, received, today), extra)}
    q1, q2 = rows["2025-Q1"], rows["2025-Q2"]
    assert (q1.expected, q1.on_time, q1.late, q1.missing, q1.extra) == (2, 2, 0, 0, 0)
    assert (q1.completeness, q1.timeliness) == (1.0, 1.0)
    assert (q2.expected, q2.missing, q2.completeness) == (2, 2, 0.0)
    assert (rows["2024-Q4"].expected, rows["2024-Q4"].extra) == (0, 1)
    assert rows["2024-Q4"].completeness is None


@pytest.mark.parametrize(
    ("received_periods", "silent_periods"),
    [
        ((), ("2025-Q1", "2025-Q2")),
        (("2025-Q1",), ("2025-Q2",)),
        (("2025-Q2",), ()),  # Q1 is missing, but it reports again: not silent
        (("2025-Q1", "2025-Q2"), ()),
    ],
)
def test_a_silent_reporter_is_one_whose_newest_due_return_is_missing(
    catalogue: Catalogue, received_periods: tuple[str, ...], silent_periods: tuple[str, ...]
) -> None:
    today = date(2025, 8, 1)  # Q3 is started but pending: it does not make anyone silent
    owed = [o for o in obligations(catalogue, today) if o.ref == "rd-boost-gva"]
    received = {
        ("kpi", "rd-boost-gva", "np11", p): datetime(2025, 4, 1, tzinfo=UTC)
        for p in received_periods
    }
    silent = silent_reporters(statuses(owed, received, today))
    assert [s.periods for s in silent] == ([silent_periods] if silent_periods else [])
    if silent:
        assert (silent[0].authority, silent[0].kind, silent[0].column) == (
            "np11",
            "kpi",
            "devolution",  # the column of the first proposal it evidences, 1a
        )
        assert silent[0].since == {"2025-Q1": Q1_DUE, "2025-Q2": Q2_DUE}[silent_periods[0]]


def test_a_progress_event_counts_for_the_update_period_it_lies_in(catalogue: Catalogue) -> None:
    assert update_period(catalogue, "2b", "2025-07") == "2025-Q3"
    assert update_period(catalogue, "2b", "2025-Q3") == "2025-Q3"
    assert update_period(catalogue, "2b", "2025") is None
