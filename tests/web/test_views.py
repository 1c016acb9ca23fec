"""The web board's pure parts: tags, KPI periods, the chart's SVG, as-at banners."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from services.office.charts import kpi_chart
from services.office.routes import environment
from services.office.views import (
    approval_tag,
    audit_link,
    cell_tag,
    completeness_grid,
    completion_summary,
    event_filter,
    kpi_periods,
    kpi_tag,
    lag_label,
    milestone_tag,
    proposal_tag,
    view_banner,
)
from shared.health import RULE_TITLES, rule_title
from shared.instants import instant_of


def ref(event_id: str, source: str = "northern-gritstone") -> dict[str, str]:
    return {"source": source, "id": event_id, "href": f"/v1/events?source={source}&id={event_id}"}


def period(name: str, end: str, actual: float, reports: list[tuple[float, str, str]]) -> dict:
    """A period of GET /v1/kpis/{id}: its newest report is the last of ``reports``."""
    _, at, event_id = reports[-1]
    return {
        "period": name,
        "period_end": end,
        "actual": actual,
        "source": "northern-gritstone",
        "reported_at": at,
        "event": ref(event_id),
        "expected": 160.0,
        "on_track": False,
        "reports": [
            {"value": v, "reported_at": t, "source": "northern-gritstone", "event": ref(i)}
            for v, t, i in reports
        ],
    }


KPI: dict[str, Any] = {
    "id": "early-stage-finance",
    "title": "Early-stage finance <raised>",
    "unit": "GBP m",
    "shape": "linear",
    "baseline": {"value": 150.0, "date": "2024-12-31"},
    "target": {"value": 300.0, "date": "2027-12-31"},
    "on_track": None,
    "trajectory": [{"date": "2024-12-31", "value": 150.0}, {"date": "2027-12-31", "value": 300.0}],
    "periods": [],
}


def test_no_report_is_no_data_never_green() -> None:
    unreported = {"rag": "green", "has_progress": False}
    assert proposal_tag(unreported).text == "No data"
    assert proposal_tag({"rag": "green", "has_progress": True}).text == "Green"
    assert proposal_tag({"rag": "red", "has_progress": False}).text == "Red"
    assert kpi_tag(KPI).text == "No data"


def test_periods_come_from_the_series_with_their_corrections() -> None:
    series = {
        **KPI,
        "periods": [
            period(
                "2025-Q1",
                "2025-03-31",
                155.0,
                [
                    (150.0, "2025-04-03T00:00:00+00:00", "a"),
                    (155.0, "2025-04-09T00:00:00+00:00", "b"),
                ],
            ),
            period("2025-Q2", "2025-06-30", 170.0, [(170.0, "2025-07-02T00:00:00+00:00", "c")]),
        ],
    }
    rows = kpi_periods(series)
    assert [(r.period, r.actual, r.source) for r in rows] == [
        ("2025-Q1", 155.0, "northern-gritstone"),
        ("2025-Q2", 170.0, "northern-gritstone"),
    ]
    assert [(c.value, c.event["id"]) for c in rows[0].corrections] == [(150.0, "a")]
    assert rows[1].corrections == () and rows[0].expected == 160.0 and rows[0].on_track is False


def test_the_chart_is_one_svg_with_a_title_a_description_and_no_script() -> None:
    series = {
        **KPI,
        "periods": [
            period("2025-Q1", "2025-03-31", 155.0, [(155.0, "2025-04-09T00:00:00+00:00", "b")])
        ],
    }
    svg = kpi_chart(series, kpi_periods(series))
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert '<title id="chart-title-early-stage-finance">Early-stage finance &lt;raised&gt;' in svg
    assert "2025-Q1: 155 GBP m" in svg
    assert "<script" not in svg and "cdn" not in svg.lower()
    empty = kpi_chart(KPI, [])
    assert "No period has been reported yet." in empty


def test_the_x_axis_names_each_year_once() -> None:
    svg = kpi_chart(KPI, [])
    x_axis = re.search(r'<g class="axis x[^"]*".*?</g>\s*</g>', svg, re.S)
    assert x_axis, svg[:2000]
    labels = re.findall(r"<text[^>]*>(\d{4})</text>", x_axis.group(0))
    assert labels == ["2025", "2026", "2027"]


def test_a_date_means_its_end_or_now_for_today() -> None:
    now = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
    assert instant_of("2026-03-01", now) == "2026-03-01T23:59:59.999999Z"
    assert instant_of("2026-03-05", now) == "2026-03-05T12:00:00Z"
    assert instant_of("2026-03-01T10:00:00Z", now) == "2026-03-01T10:00:00Z"
    with pytest.raises(ValueError):
        instant_of("1 March", now)


def test_the_banner_says_which_past_view() -> None:
    assert view_banner({"as_at": "2026-03-01"}) == "As at 1 March 2026, as now known"
    assert (
        view_banner({"as_at": "2026-03-01", "known_at": "2026-03-05"})
        == "As at 1 March 2026, as it was shown on 5 March 2026"
    )
    assert view_banner({"known_at": "2026-03-05"}) == "As it was shown on 5 March 2026"


def test_reasons_link_to_their_events_and_what_they_are_about() -> None:
    assert audit_link(ref("e-1", "nhsa")) == {"source": "nhsa", "id": "e-1"}
    assert event_filter({"kpi": "jobs", "milestone": None}, "1a") == {"kpi": "jobs"}
    assert event_filter({"kpi": None, "milestone": "m"}, "1a") == {
        "proposal": "1a",
        "milestone": "m",
    }
    assert lag_label(0) == "no lag" and lag_label(86400) == "1 day"
    assert lag_label(14 * 86400) == "14 days"


def test_every_rule_has_a_title() -> None:
    assert rule_title("milestone_dependency_at_risk") == RULE_TITLES["milestone_dependency_at_risk"]
    assert rule_title("a_rule_to_come") == "a_rule_to_come"


def test_milestones_say_whether_a_completion_is_verified() -> None:
    assert milestone_tag({"status": "completed", "verification": "verified"}).text == "Verified"
    unverified = {"status": "completed", "verification": "unverified"}
    assert milestone_tag(unverified).text == "Completed, unverified"
    assert milestone_tag({"status": "blocked", "verification": None}).text == "Blocked"
    proposal = {"milestones": [{"status": "completed", "verification": "verified"}, unverified]}
    assert completion_summary(proposal) == "2 of 2 completed (1 verified, 1 unverified)"
    assert approval_tag(None).text == "No data" and approval_tag(True).text == "Approved"


def test_a_completeness_cell_is_a_ratio_its_counts_and_a_word() -> None:
    row = {"authority": "np11", "period": "2026-Q1", "expected": 5, "received": 4}
    grid = completeness_grid(
        [{**row, "on_time": 3, "late": 1, "missing": 1, "pending": 0, "extra": 0}]
    )
    cell = grid.cell("np11", "2026-Q1")
    assert cell is not None and (cell.received, cell.expected) == (4, 5)
    assert cell.counts == "3 on time, 1 late, 1 missing" and cell.tag.text == "Missing"
    assert grid.authorities == ("np11",) and grid.periods == ("2026-Q1",)
    late = {**row, "on_time": 3, "late": 1, "missing": 0, "pending": 1, "extra": 0}
    assert cell_tag(late).text == "Late"


LOCK = {
    "action": "approve",
    "by": "office/alice",
    "at": "2026-03-01T10:00:00Z",
    "reason": None,
    "event": {"source": "office/alice", "id": "approve.kpi.exports.2026-Q1.np11.1"},
}


def test_the_reviews_page_names_the_lock_that_kept_an_event_aside() -> None:
    queue = {
        "generated_at": "2026-03-02T00:00:00Z",
        "counts": {"waiting": 0, "returned": 0, "kept_aside": 1},
        "waiting": [],
        "returned": [],
        "kept_aside": [
            {
                "event": {"source": "np11", "id": "late-<1>"},
                "type": "org.cotn.kpi.v1",
                "target": "kpi.exports.2026-Q1.np11",
                "column": "business",
                "proposal": "3a",
                "received_at": "2026-03-01T10:00:01Z",
                "data": {"kpi": "exports", "period": "2026-Q1", "value": 12.5},
                "lock": LOCK,
            }
        ],
    }
    html = (
        environment()
        .get_template("reviews.html")
        .render(
            page="reviews",
            signed_in=None,
            csrf_field="c",
            csrf="t",
            aggregator="http://a",
            filters={},
            columns=[],
            queue=queue,
            error=None,
        )
    )
    assert "Approval by office/alice" in html
    assert "/audit?source=office%2Falice&amp;id=approve.kpi.exports.2026-Q1.np11.1" in html
    assert "/audit?source=np11&amp;id=late-%3C1%3E" in html and "late-&lt;1&gt;" in html
    assert "exports 2026-Q1: 12.5" in html
