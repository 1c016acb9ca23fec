"""The GMPP-style quarterly return (shared/exports/gmpp.py) over hand-made standings.

The standing is the shipped catalogue as at the end of 2026-Q3 with milestone states, KPI
reports and returns written out below; the expected cells are worked out by hand from
them (the trajectory values of the compound KPIs are read from ``kpi_expected``, which is
their definition).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from shared.catalogue import DEFAULT_CATALOGUE, Catalogue, MilestoneKey, load_catalogue
from shared.exports import PeriodResult, Standing
from shared.exports.gmpp import (
    COLUMNS,
    DCA,
    ON_TRACK,
    GmppRow,
    QuarterReturns,
    gmpp_csv,
    gmpp_json,
    gmpp_rows,
    quarter_bounds,
)
from shared.health import (
    KpiObservation,
    MilestoneState,
    ProgrammeState,
    kpi_expected,
    programme_health,
)
from shared.periods import period_end, period_start
from shared.reporting import ReturnKey, obligations, statuses

CATALOGUE: Catalogue = load_catalogue(DEFAULT_CATALOGUE)
QUARTER = "2026-Q3"
END_OF_Q3 = datetime(2026, 9, 30, 23, 59, 59, 999999, tzinfo=UTC)


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


MILESTONES: list[tuple[str, str, str, str]] = [
    # 1a: pilot-agreement completed in the quarter, spending-review-case in the one before.
    ("1a", "joint-position", "completed", "2025-06-20"),
    ("1a", "cluster-evidence", "completed", "2025-11-10"),
    ("1a", "spending-review-case", "completed", "2026-06-25"),
    ("1a", "pilot-agreement", "completed", "2026-08-15"),
    ("1a", "integrated-programmes-live", "in_progress", "2026-09-01"),
    # 2a: a blocked milestone, overdue beyond grace: red.
    ("2a", "adoption-priorities", "completed", "2025-07-15"),
    ("2a", "innovate-uk-agreement", "completed", "2026-01-20"),
    ("2a", "campaign-launch", "blocked", "2026-09-20"),
    # 2b: nothing ever reported: stalled, red.
    # 3a: completed late, in the quarter; a milestone at risk: amber.
    ("3a", "offer-defined", "completed", "2025-09-20"),
    ("3a", "government-support", "completed", "2026-01-25"),
    ("3a", "first-mission", "completed", "2026-07-05"),
    ("3a", "investor-pipeline", "at_risk", "2026-09-25"),
    # 3b: on track: green.
    ("3b", "network-terms", "completed", "2025-06-25"),
    ("3b", "network-launched", "completed", "2025-10-20"),
    ("3b", "first-trials", "completed", "2026-05-20"),
    ("3b", "evaluation-published", "in_progress", "2026-09-28"),
    # prevention: every milestone completed (early); amber only through its KPIs.
    ("prevention", "institute-business-case", "completed", "2025-09-25"),
    ("prevention", "institute-funding", "completed", "2026-03-20"),
    ("prevention", "integrated-pilots-designed", "completed", "2026-07-10"),
    ("prevention", "institute-established", "completed", "2026-08-20"),
    ("prevention", "first-research-programme", "completed", "2026-09-10"),
    # ai-cluster: skills-offer completed late, pushing what follows it past its due date.
    ("ai-cluster", "entry-point", "completed", "2025-09-25"),
    ("ai-cluster", "skills-offer", "completed", "2026-08-01"),
    ("ai-cluster", "triple-helix-partnerships", "in_progress", "2026-09-15"),
]

UNAPPROVED_JOBS = 12345.0
UNAPPROVED_FINANCE = 777.0
APPROVED_AFTER_QUARTER = 31337.0

OBSERVATIONS: list[tuple[str, str, float, str]] = [
    ("life-sciences-jobs", "2026-Q1", 60000.0, "2026-04-20"),
    # The newest report, far off trajectory and not approved: it colours 1a and prevention
    # amber, but its value must not leave the programme.
    ("life-sciences-jobs", "2026-Q2", UNAPPROVED_JOBS, "2026-07-20"),
    # Off trajectory and approved: its value may be said.
    ("life-sciences-gva", "2026-Q2", 5.0, "2026-07-21"),
    ("early-stage-finance", "2026-Q2", 210.0, "2026-07-22"),
    ("early-stage-finance", "2026-Q3", UNAPPROVED_FINANCE, "2026-09-29"),
]

APPROVED: dict[tuple[str, str], float] = {
    ("life-sciences-jobs", "2026-Q1"): 60000.0,
    ("life-sciences-gva", "2026-Q2"): 5.0,
    ("early-stage-finance", "2026-Q2"): 210.0,
    # Approved, but for a period ending after the quarter: not this quarter's value.
    ("exports", "2026-Q4"): APPROVED_AFTER_QUARTER,
}

RECEIVED: dict[ReturnKey, str] = {
    ("update", "1a", "greater-manchester", "2026-Q1"): "2026-04-10",  # due in Q2
    ("update", "1a", "greater-manchester", "2026-Q2"): "2026-07-10",  # due 07-14: on time
    ("kpi", "life-sciences-jobs", "nhsa", "2026-Q2"): "2026-08-05",  # due 07-30: late
    ("kpi", "life-sciences-jobs", "np11", "2026-Q2"): "2026-07-25",
    ("kpi", "life-sciences-gva", "nhsa", "2026-Q2"): "2026-07-29",
}


def period_result(kpi_id: str, period: str) -> PeriodResult:
    actual = APPROVED.get((kpi_id, period))
    end = period_end(period)
    return PeriodResult(
        period=period,
        start=period_start(period),
        end=end,
        target=kpi_expected(CATALOGUE.kpi_by_id[kpi_id], end),
        actual=actual,
        reporter="nhsa" if actual is not None else None,
        approved_at=at("2026-08-10") if actual is not None else None,
    )


def standing(
    as_at: datetime = END_OF_Q3,
    milestones: list[tuple[str, str, str, str]] = MILESTONES,
    received: dict[ReturnKey, str] = RECEIVED,
    verified: frozenset[MilestoneKey] = frozenset(),
) -> Standing:
    state = ProgrammeState(
        milestones={
            (p, m): MilestoneState(p, m, s, at(day), f"/{p}", f"{p}-{m}")
            for p, m, s, day in milestones
            if at(day) <= as_at
        },
        kpi_observations={
            kpi: [
                KpiObservation(k, period, value, at(day), "/nhsa", f"{k}-{period}")
                for k, period, value, day in OBSERVATIONS
                if k == kpi and at(day) <= as_at
            ]
            for kpi in {o[0] for o in OBSERVATIONS}
        },
    )
    quarters = ("2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4")
    today = as_at.date()
    return Standing(
        catalogue=CATALOGUE,
        as_at=as_at,
        health=programme_health(CATALOGUE, state, as_at),
        kpi_periods={
            k.id: tuple(period_result(k.id, q) for q in quarters)
            for k in CATALOGUE.kpis
            if k.id != "rd-boost-gva"  # a KPI the standing has no periods of
        },
        verified=verified,
        returns=tuple(
            statuses(
                obligations(CATALOGUE, today),
                {key: at(day) for key, day in received.items() if at(day) <= as_at},
                today,
            )
        ),
    )


VERIFIED = frozenset({("1a", "pilot-agreement"), ("1a", "spending-review-case")})


@pytest.fixture(scope="module")
def q3() -> Standing:
    return standing(verified=VERIFIED)


@pytest.fixture(scope="module")
def rows(q3: Standing) -> dict[str, GmppRow]:
    return {r.id: r for r in gmpp_rows(q3, QUARTER)}


# Quarters


@pytest.mark.parametrize(
    ("quarter", "first", "last"),
    [
        ("2026-Q1", date(2026, 1, 1), date(2026, 3, 31)),
        ("2026-Q2", date(2026, 4, 1), date(2026, 6, 30)),
        ("2026-Q3", date(2026, 7, 1), date(2026, 9, 30)),
        ("2026-Q4", date(2026, 10, 1), date(2026, 12, 31)),
    ],
)
def test_quarter_bounds(quarter: str, first: date, last: date) -> None:
    assert quarter_bounds(quarter) == (first, last)


@pytest.mark.parametrize(
    ("quarter", "reason"),
    [
        ("2026-Q5", "a year has quarters Q1 to Q4"),
        ("2026-Q0", "a year has quarters Q1 to Q4"),
        ("2026Q3", "expected YYYY-Qn"),
        ("Q3", "expected YYYY-Qn"),
        ("2026-07", "expected YYYY-Qn"),
        ("2026-Q3\n", "expected YYYY-Qn"),
    ],
)
def test_quarter_bounds_refuses_what_is_not_a_quarter(quarter: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as refused:
        quarter_bounds(quarter)
    assert repr(quarter) in str(refused.value)


def test_rows_refuse_a_malformed_quarter(q3: Standing) -> None:
    with pytest.raises(ValueError, match="2026Q3"):
        gmpp_rows(q3, "2026Q3")


# Rows


def test_one_row_per_proposal_and_gamechanger_in_catalogue_order(q3: Standing) -> None:
    rows = gmpp_rows(q3, QUARTER)
    assert [r.id for r in rows] == ["1a", "2a", "2b", "3a", "3b", "prevention", "ai-cluster"]
    assert [(r.id, r.kind, r.column) for r in rows][-2:] == [
        ("prevention", "gamechanger", "devolution"),
        ("ai-cluster", "gamechanger", "collaboration"),
    ]
    assert rows[0].name == "Devolution of innovation support"
    assert {r.quarter for r in rows} == {QUARTER}
    assert {r.as_at for r in rows} == {END_OF_Q3}


def test_dca_is_the_monitors_rag_on_the_three_point_scale(
    q3: Standing, rows: dict[str, GmppRow]
) -> None:
    assert {pid: r.dca for pid, r in rows.items()} == {
        "1a": "Amber",
        "2a": "Red",
        "2b": "Red",
        "3a": "Amber",
        "3b": "Green",
        "prevention": "Amber",
        "ai-cluster": "Amber",
    }
    for pid, row in rows.items():
        assert row.dca == DCA[q3.health.proposals[pid].rag]


def test_commentary_is_the_reasons_as_sentences(rows: dict[str, GmppRow]) -> None:
    assert rows["3b"].commentary == ON_TRACK
    assert rows["2a"].commentary == (
        "Pan-Northern technology adoption campaign launched is blocked. "
        "Pan-Northern technology adoption campaign launched was due 2026-04-30 and is blocked, "
        "more than 14 days late."
    )
    assert rows["3a"].commentary == (
        "Investor pipeline linked to Northern research assets in place is at risk."
    )
    assert rows["ai-cluster"].commentary == (
        "Triple helix partnerships embedding AI in industry formed is at risk because of "
        "ai-cluster/skills-offer, which is late: forecast 2026-10-30 against due 2026-09-30 "
        "(chain ai-cluster/skills-offer -> ai-cluster/triple-helix-partnerships)."
    )
    # 2b never reported: 578 days and a part from the programme's start to the quarter's end.
    assert rows["2b"].commentary == (
        "Analysis of early-stage finance gaps for Northern startups and spinouts was due "
        "2025-09-30 and is not started, more than 14 days late. "
        "Forum of universities, finance bodies and business services providers convened was "
        "due 2025-12-31 and is not started, more than 14 days late. "
        "Proposal to channel local authority pension capital into early-stage vehicles was "
        "due 2026-06-30 and is not started, more than 14 days late. "
        "No milestone event for 578 days, stall threshold 60 days."
    )


def test_commentary_says_an_approved_kpi_value_but_never_an_unapproved_one(
    rows: dict[str, GmppRow],
) -> None:
    gva_expected = kpi_expected(CATALOGUE.kpi_by_id["life-sciences-gva"], date(2026, 6, 30))
    expected = (
        "Jobs in the Northern life sciences sector: the latest return (2026-Q2) is off its "
        "trajectory; its value is not yet approved. "
        "Gross Value Added of the Northern life sciences sector: 5 in 2026-Q2 against "
        f"{gva_expected:g} expected."
    )
    assert rows["1a"].commentary == expected
    assert rows["prevention"].commentary == expected
    assert f"{UNAPPROVED_JOBS:g}" not in rows["1a"].commentary


def test_schedule_dates(rows: dict[str, GmppRow]) -> None:
    start = date(2025, 3, 1)  # the programme's start: no proposal has a start of its own
    dates = {
        pid: (r.baseline_start, r.baseline_end, r.forecast_start, r.forecast_end)
        for pid, r in rows.items()
    }
    assert dates == {
        # forecast end: the unfinished last milestone's forecast, its due date here
        "1a": (start, date(2027, 6, 30), date(2025, 6, 20), date(2027, 6, 30)),
        "2a": (start, date(2027, 9, 30), date(2025, 7, 15), date(2027, 9, 30)),
        # never started: forecast start is the baseline start
        "2b": (start, date(2027, 12, 31), start, date(2027, 12, 31)),
        "3a": (start, date(2027, 10, 31), date(2025, 9, 20), date(2027, 10, 31)),
        "3b": (start, date(2027, 11, 30), date(2025, 6, 25), date(2027, 11, 30)),
        # all completed: forecast end is the last completion
        "prevention": (start, date(2027, 9, 30), date(2025, 9, 25), date(2026, 9, 10)),
        "ai-cluster": (start, date(2027, 12, 31), date(2025, 9, 25), date(2027, 12, 31)),
    }


def test_forecast_end_is_the_latest_forecast_of_the_unfinished(q3: Standing) -> None:
    health = q3.health.proposals["1a"]
    pushed = tuple(
        m._replace(forecast=date(2028, 2, 1)) if m.id == "integrated-programmes-live" else m
        for m in health.milestones
    )
    proposals = {**q3.health.proposals, "1a": dataclasses.replace(health, milestones=pushed)}
    moved = dataclasses.replace(q3, health=dataclasses.replace(q3.health, proposals=proposals))
    assert gmpp_rows(moved, QUARTER)[0].forecast_end == date(2028, 2, 1)


def test_milestones_due_completed_and_overdue_in_the_quarter(rows: dict[str, GmppRow]) -> None:
    got = {
        pid: (r.milestones_due, r.milestones_completed, r.milestones_overdue)
        for pid, r in rows.items()
    }
    assert got == {
        # spending-review-case was completed in the quarter before: not counted
        "1a": (("pilot-agreement",), ("pilot-agreement",), ()),
        "2a": ((), (), ("campaign-launch",)),
        "2b": (
            (),
            (),
            ("finance-gap-analysis", "partner-forum", "pension-capital-proposal"),
        ),
        # first-mission was due in the quarter before and completed in this one
        "3a": ((), ("first-mission",), ()),
        "3b": ((), (), ()),
        "prevention": (
            ("integrated-pilots-designed",),
            ("integrated-pilots-designed", "institute-established", "first-research-programme"),
            (),
        ),
        # due on the quarter's last day: not overdue until the day after
        "ai-cluster": (("triple-helix-partnerships",), ("skills-offer",), ()),
    }
    # Verified completions of the quarter only (spending-review-case was verified too).
    assert rows["1a"].milestones_verified == ("pilot-agreement",)
    assert all(r.milestones_verified == () for pid, r in rows.items() if pid != "1a")


def test_a_completion_after_the_as_at_instant_is_not_counted(q3: Standing) -> None:
    """Even should the standing know of one (it should not), a completion later than
    ``as_at`` is not in the quarter's return."""
    early = dataclasses.replace(q3, as_at=datetime(2026, 8, 31, 23, 59, tzinfo=UTC))
    row = next(r for r in gmpp_rows(early, QUARTER) if r.id == "prevention")
    assert row.milestones_completed == ("integrated-pilots-designed", "institute-established")


def test_kpis_are_their_newest_approved_values_against_the_trajectory(
    rows: dict[str, GmppRow],
) -> None:
    jobs = CATALOGUE.kpi_by_id["life-sciences-jobs"]
    line = rows["1a"].kpis[0]
    assert (line.kpi, line.period, line.actual) == ("life-sciences-jobs", "2026-Q1", 60000.0)
    assert line.target == round(kpi_expected(jobs, date(2026, 3, 31)), 2)
    assert line.expected == round(kpi_expected(jobs, date(2026, 9, 30)), 2)
    assert line.expected_on == date(2026, 9, 30)
    assert [k.kpi for k in rows["1a"].kpis] == [
        "life-sciences-jobs",
        "life-sciences-gva",
        "private-rd-per-public-pound",
        "rd-boost-gva",
    ]
    # Linear 150 -> 300 over 2024-12-31..2027-12-31 (1095 days): 546 days to 2026-06-30,
    # 638 to 2026-09-30. The 2026-Q3 report of 777 is not approved.
    (finance,) = rows["2b"].kpis
    assert (finance.period, finance.actual, finance.target, finance.expected) == (
        "2026-Q2",
        210.0,
        224.79,
        237.4,
    )
    # rd-boost-gva: 0 -> 22 over 25 years (9131 days), 273 days in: 0.66; no periods at all.
    rd = rows["3a"].kpis[0]
    assert (rd.kpi, rd.period, rd.actual, rd.target, rd.expected) == (
        "rd-boost-gva",
        None,
        None,
        None,
        0.66,
    )
    # exports has an approved value only for a period ending after the quarter.
    exports = rows["3a"].kpis[1]
    assert (exports.kpi, exports.period, exports.actual) == ("exports", None, None)
    assert rows["3b"].kpis == ()


def test_no_unapproved_value_leaves_in_the_csv_or_the_json(q3: Standing) -> None:
    rows = gmpp_rows(q3, QUARTER)
    texts = (gmpp_csv(rows), json.dumps(gmpp_json(rows)))
    for text in texts:
        for value in (UNAPPROVED_JOBS, UNAPPROVED_FINANCE, APPROVED_AFTER_QUARTER):
            assert f"{value:g}" not in text


def test_returns_due_in_the_quarter_are_counted_once_for_their_proposal(
    q3: Standing, rows: dict[str, GmppRow]
) -> None:
    got = {pid: r.returns for pid, r in rows.items()}
    # 1a: its update (on time) and the 2026-Q2 returns of the four KPIs filed under it
    # (life-sciences-jobs 2, life-sciences-gva 2, private-rd-per-public-pound 2,
    # rd-boost-gva 1): 8 due from 07-14 to 07-30, of which 4 received, one of them late.
    assert got["1a"] == QuarterReturns(expected=8, on_time=3, late=1, missing=4, pending=0)
    assert got["1a"].completeness == 0.5
    # prevention: its update and health-research-funding-per-person's two reporters; the
    # life sciences KPIs it also evidences are filed under 1a.
    assert got["prevention"] == QuarterReturns(3, 0, 0, 3, 0)
    assert got["prevention"].completeness == 0.0
    # 3a: its update and exports' eleven reporters.
    assert got["3a"].expected == 12
    assert [got[p].expected for p in ("2a", "2b", "3b", "ai-cluster")] == [1, 3, 1, 1]
    in_quarter = [s for s in q3.returns if date(2026, 7, 1) <= s.obligation.due <= END_OF_Q3.date()]
    assert sum(r.expected for r in got.values()) == len(in_quarter) == 29


def test_returns_of_a_quarter_not_yet_ended(q3: Standing) -> None:
    mid = standing(as_at=datetime(2026, 7, 20, 12, tzinfo=UTC))
    rows = {r.id: r for r in gmpp_rows(mid, QUARTER)}
    assert rows["1a"].returns == QuarterReturns(8, 1, 0, 0, 7)
    assert rows["1a"].returns.completeness == 0.125
    # 2b's update was due on 07-14: missing; its KPI returns are due on 07-30: pending.
    assert rows["2b"].returns == QuarterReturns(3, 0, 0, 1, 2)


def test_completeness_is_none_when_nothing_is_due(q3: Standing) -> None:
    quiet = dataclasses.replace(q3, returns=())
    rows = gmpp_rows(quiet, QUARTER)
    assert {r.returns.completeness for r in rows} == {None}
    assert (
        next(csv.DictReader(io.StringIO(gmpp_csv(rows), newline="")))["returns_completeness"] == ""
    )


# Writing

DOC = Path(__file__).parents[1] / "docs" / "exports-gmpp.md"
KPI_CELL = re.compile(
    next(line for line in DOC.read_text().splitlines() if line.startswith("^(?P<kpi>"))
)
"""The documented form of one KPI in the ``kpis`` cell, read from the document."""


def test_the_document_describes_every_column() -> None:
    text = DOC.read_text()
    assert [c for c in COLUMNS if f"`{c}`" not in text] == []


AWKWARD = 'Leaders said "not yet", then\nagreed; see minutes.'


def awkward_rows(q3: Standing) -> list[GmppRow]:
    rows = gmpp_rows(q3, QUARTER)
    return [dataclasses.replace(rows[0], commentary=AWKWARD), *rows[1:]]


def test_csv_parses_back_to_the_same_cells(q3: Standing) -> None:
    rows = awkward_rows(q3)
    text = gmpp_csv(rows)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == list(COLUMNS)
    assert len(parsed) == len(rows) + 1
    body = [dict(zip(COLUMNS, line, strict=True)) for line in parsed[1:]]
    assert body[0]["commentary"] == AWKWARD
    assert '"Leaders said ""not yet"", then\nagreed; see minutes."' in text
    assert body[0]["kpis"] == (
        "life-sciences-jobs: 60000 approved for 2026-Q1 against 66481.88 expected, "
        "67803.51 expected at 2026-09-30; "
        "life-sciences-gva: 5 approved for 2026-Q2 against 7.11 expected, "
        "7.22 expected at 2026-09-30; "
        "private-rd-per-public-pound: no approved value, 1 expected at 2026-09-30; "
        "rd-boost-gva: no approved value, 0.66 expected at 2026-09-30"
    )
    assert body[0]["milestones_due_count"] == "1"
    assert body[0]["milestones_due"] == "pilot-agreement"
    assert body[2]["milestones_overdue"] == (
        "finance-gap-analysis; partner-forum; pension-capital-proposal"
    )
    assert body[2]["milestones_overdue_count"] == "3"
    assert body[0]["as_at"] == "2026-09-30T23:59:59.999999Z"
    assert body[0]["dca"] == "Amber"
    assert body[0]["returns_completeness"] == "0.5"
    assert body[5]["forecast_end"] == "2026-09-10"


def test_csv_records_end_with_crlf_and_line_breaks_stay_inside_quotes(q3: Standing) -> None:
    rows = awkward_rows(q3)
    text = gmpp_csv(rows)
    assert text.endswith("\r\n")
    outside = re.sub(r'"(?:[^"]|"")*"', '""', text)
    assert "\n" not in outside.replace("\r\n", "")
    assert "\r" not in outside.replace("\r\n", "")
    assert outside.count("\r\n") == len(rows) + 1


def test_every_kpi_cell_parses_in_the_documented_form(q3: Standing) -> None:
    rows = gmpp_rows(q3, QUARTER)
    for line in csv.DictReader(io.StringIO(gmpp_csv(rows), newline="")):
        row = next(r for r in rows if r.id == line["id"])
        parts = line["kpis"].split("; ") if line["kpis"] else []
        assert len(parts) == len(row.kpis)
        for part, kpi in zip(parts, row.kpis, strict=True):
            found = KPI_CELL.fullmatch(part)
            assert found, part
            assert found["kpi"] == kpi.kpi
            assert found["period"] == kpi.period
            assert float(found["expected"]) == kpi.expected
            if kpi.actual is None:
                assert found["actual"] is None
            else:
                assert float(found["actual"]) == kpi.actual
                assert float(found["target"]) == kpi.target


def test_json_gives_the_same_values_structured(q3: Standing) -> None:
    rows = awkward_rows(q3)
    records = gmpp_json(rows)
    assert json.loads(json.dumps(records)) == records
    cells = list(csv.DictReader(io.StringIO(gmpp_csv(rows), newline="")))
    for record, cell in zip(records, cells, strict=True):
        for column in COLUMNS:
            if column.endswith("_count"):
                assert len(record[column.removesuffix("_count")]) == int(cell[column])
            elif column.startswith("milestones_"):
                assert "; ".join(record[column]) == cell[column]
            elif column == "kpis":
                assert len(record["kpis"]) == (cell["kpis"].count("; ") + 1 if cell["kpis"] else 0)
            elif column == "returns_completeness":
                value = record[column]
                assert (value is None and cell[column] == "") or value == float(cell[column])
            elif column.startswith("returns_"):
                assert record[column] == int(cell[column])
            else:
                assert record[column] == cell[column]
    assert records[0]["kpis"][0] == {
        "kpi": "life-sciences-jobs",
        "title": "Jobs in the Northern life sciences sector",
        "unit": "jobs",
        "period": "2026-Q1",
        "actual": 60000.0,
        "target": rows[0].kpis[0].target,
        "expected": rows[0].kpis[0].expected,
        "expected_on": "2026-09-30",
    }
    assert records[2]["kpis"][0]["actual"] == 210.0
    assert records[4]["kpis"] == []
    assert records[0]["milestones_verified"] == ["pilot-agreement"]
