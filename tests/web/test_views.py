"""The web board's pure parts: tags, KPI periods and the chart's SVG."""

from __future__ import annotations

from typing import Any

from services.office.charts import kpi_chart
from services.office.views import expected, kpi_periods, kpi_tag, proposal_tag

KPI: dict[str, Any] = {
    "id": "early-stage-finance",
    "title": "Early-stage finance <raised>",
    "unit": "GBP m",
    "shape": "linear",
    "baseline": {"value": 150.0, "date": "2024-12-31"},
    "target": {"value": 300.0, "date": "2027-12-31"},
    "on_track": None,
}


def report(period: str, value: float, at: str, source: str = "northern-gritstone") -> dict:
    return {
        "type": "org.cotn.kpi.v1",
        "source": source,
        "event_time": at,
        "data": {"kpi": KPI["id"], "period": period, "value": value},
    }


def test_no_report_is_no_data_never_green() -> None:
    unreported = {"rag": "green", "has_progress": False}
    assert proposal_tag(unreported).text == "No data"
    assert proposal_tag({"rag": "green", "has_progress": True}).text == "Green"
    assert proposal_tag({"rag": "red", "has_progress": False}).text == "Red"
    assert kpi_tag(KPI).text == "No data"


def test_each_period_keeps_its_newest_report_by_event_time() -> None:
    events = [
        report("2025-Q2", 170.0, "2025-07-02T00:00:00+00:00"),
        report("2025-Q1", 150.0, "2025-04-03T00:00:00+00:00"),
        report("2025-Q1", 155.0, "2025-04-09T00:00:00+00:00"),  # the correction
        report("2025-Q1", 140.0, "2025-04-01T00:00:00+00:00"),  # late backfill of an older one
        {**report("2025-Q3", 1.0, "2025-10-01T00:00:00+00:00"), "type": "org.cotn.milestone.v1"},
    ]
    rows = kpi_periods(KPI, events)
    assert [(r.period, r.actual) for r in rows] == [("2025-Q1", 155.0), ("2025-Q2", 170.0)]
    assert rows[0].expected == expected(KPI, rows[0].end)
    assert 150 < rows[0].expected < 300


def test_the_chart_is_one_svg_with_a_title_a_description_and_no_script() -> None:
    rows = kpi_periods(KPI, [report("2025-Q1", 155.0, "2025-04-09T00:00:00+00:00")])
    svg = kpi_chart(KPI, rows)
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert '<title id="chart-title-early-stage-finance">Early-stage finance &lt;raised&gt;' in svg
    assert "2025-Q1: 155 GBP m" in svg
    assert "<script" not in svg and "cdn" not in svg.lower()
    empty = kpi_chart(KPI, [])
    assert "No period has been reported yet." in empty
