"""What the pages show, from the read API's plain JSON: labels, tags, summaries, KPI series.

Pure functions of the documents (and a clock where a page says "ago"); the templates only
lay them out. Text from events stays data: nothing here builds HTML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from shared.periods import period_end

Document = Mapping[str, Any]

RAG_LABEL = {"red": "Red", "amber": "Amber", "green": "Green"}
STATUS_LABEL = {
    "completed": "Completed",
    "in_progress": "In progress",
    "at_risk": "At risk",
    "blocked": "Blocked",
    "not_started": "Not started",
}
STATUS_COLOUR = {
    "completed": "green",
    "in_progress": "blue",
    "at_risk": "amber",
    "blocked": "red",
    "not_started": "grey",
}
RULE_LABEL = {
    "milestone_blocked": "Milestone blocked",
    "milestone_overdue_beyond_grace": "Milestone overdue beyond grace",
    "stalled": "Stalled",
    "milestone_at_risk": "Milestone at risk",
    "milestone_overdue": "Milestone overdue",
    "kpi_off_trajectory": "KPI off trajectory",
    "progress_ageing": "Progress ageing",
}
MILESTONE_TYPE = "org.cotn.milestone.v1"
KPI_TYPE = "org.cotn.kpi.v1"


@dataclass(frozen=True)
class Tag:
    """A status as a word and a colour (never the colour alone)."""

    text: str
    colour: str


def parse_time(stamp: str | None) -> datetime | None:
    return None if not stamp else datetime.fromisoformat(stamp)


def when(stamp: str | datetime | None) -> str:
    """``2026-11-27 12:00 UTC``, or ``never``."""
    moment = parse_time(stamp) if isinstance(stamp, str) or stamp is None else stamp
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def number(value: float | None, unit: str = "") -> str:
    """Thousands keep every digit (118,700 jobs); small figures four significant ones."""
    if value is None:
        return "no data"
    shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return shown + (f" {unit}" if unit else "")


def proposal_tag(proposal: Document) -> Tag:
    """The proposal's RAG; "No data" instead of a green nobody has reported."""
    if not proposal["has_progress"] and proposal["rag"] == "green":
        return Tag("No data", "grey")
    rag = str(proposal["rag"])
    return Tag(RAG_LABEL.get(rag, rag), rag)


def kpi_tag(kpi: Document) -> Tag:
    if kpi["on_track"] is None:
        return Tag("No data", "grey")
    return Tag("On track", "green") if kpi["on_track"] else Tag("Off trajectory", "red")


def status_tag(status: str) -> Tag:
    return Tag(STATUS_LABEL.get(status, status), STATUS_COLOUR.get(status, "grey"))


def rag_tag(rag: str) -> Tag:
    return Tag(RAG_LABEL.get(rag, rag), rag)


def rule_label(rule: str) -> str:
    return RULE_LABEL.get(rule, rule)


def proposals(board: Document) -> list[Document]:
    return [p for c in board["columns"] for p in c["proposals"]]


def column_board(board: Document, column_id: str) -> Document | None:
    """The board cut to one column and the KPIs its proposals are evidenced by; None if the
    board has no such column."""
    column = next((c for c in board["columns"] if c["id"] == column_id), None)
    if column is None:
        return None
    ids = {p["id"] for p in column["proposals"]}
    kpis = [k for k in board["kpis"] if ids & set(k["evidences"])]
    return {**board, "columns": [column], "kpis": kpis}


def proposal_in(board: Document, proposal_id: str) -> Document | None:
    """The board's entry for one proposal, or None."""
    return next((p for p in proposals(board) if p["id"] == proposal_id), None)


@dataclass(frozen=True)
class Summary:
    """The counts at the top of the programme page."""

    red: int
    amber: int
    green: int
    no_data: int
    stalled: int
    overdue: int
    kpis_off: int
    kpis_no_data: int
    newest_report: datetime | None


def summary(board: Document) -> Summary:
    """How many proposals are in each state, KPIs off trajectory, and the newest report."""
    all_proposals = proposals(board)
    tags = [proposal_tag(p).text for p in all_proposals]
    reports: list[datetime] = [
        t for p in all_proposals if p["has_progress"] and (t := parse_time(p["last_progress"]))
    ]
    reports += [t for k in board["kpis"] if (t := parse_time(k["reported_at"]))]
    return Summary(
        red=tags.count("Red"),
        amber=tags.count("Amber"),
        green=tags.count("Green"),
        no_data=tags.count("No data"),
        stalled=sum(p["stalled"] for p in all_proposals),
        overdue=sum(len(p["overdue"]) for p in all_proposals),
        kpis_off=sum(k["on_track"] is False for k in board["kpis"]),
        kpis_no_data=sum(k["on_track"] is None for k in board["kpis"]),
        newest_report=max(reports, default=None),
    )


def event_filter(reason: Document, proposal_id: str) -> dict[str, str]:
    """The audit-trail filter that lists the events behind a reason."""
    if reason.get("kpi"):
        return {"type": KPI_TYPE}
    return {"proposal": proposal_id, "type": MILESTONE_TYPE}


def event_summary(event: Document) -> str:
    """One line of what an event says (its data fields), for the audit table."""
    data = event.get("data") or {}
    if event.get("type") == MILESTONE_TYPE:
        return f"{data.get('milestone')}: {STATUS_LABEL.get(data.get('status', ''), '?')}"
    if event.get("type") == KPI_TYPE:
        unit = f" {data['unit']}" if data.get("unit") else ""
        return f"{data.get('kpi')} {data.get('period')}: {data.get('value')}{unit}"
    return ", ".join(f"{k}={v}" for k, v in data.items() if k != "note")


# -- KPI series --------------------------------------------------------------------------


def expected(kpi: Document, at: date) -> float:
    """The trajectory at ``at`` from the API's baseline, target and shape (the aggregator's
    rule, shared.health.kpi_expected, over the same numbers)."""
    start, end = (
        date.fromisoformat(kpi["baseline"]["date"]),
        date.fromisoformat(kpi["target"]["date"]),
    )
    b, t = float(kpi["baseline"]["value"]), float(kpi["target"]["value"])
    span = (end - start).days
    f = min(1.0, max(0.0, (at - start).days / span)) if span else 1.0
    if kpi["shape"] == "compound" and b > 0 and t > 0:
        return float(b * (t / b) ** f)
    return b + (t - b) * f


@dataclass(frozen=True)
class PeriodRow:
    period: str
    end: date
    actual: float
    expected: float
    reported_at: datetime
    source: str
    note: str | None


def kpi_periods(kpi: Document, events: Iterable[Document]) -> list[PeriodRow]:
    """Each reported period's actual (its newest report by event time), oldest first."""
    newest: dict[str, Document] = {}
    for event in events:
        data = event.get("data") or {}
        if event.get("type") != KPI_TYPE or data.get("kpi") != kpi["id"]:
            continue
        period = str(data.get("period"))
        held = newest.get(period)
        if held is None or event["event_time"] > held["event_time"]:
            newest[period] = event
    rows = []
    for period, event in newest.items():
        try:
            end = period_end(period)
        except ValueError:
            continue
        data = event["data"]
        rows.append(
            PeriodRow(
                period=period,
                end=end,
                actual=float(data["value"]),
                expected=expected(kpi, end),
                reported_at=datetime.fromisoformat(event["event_time"]),
                source=event["source"],
                note=data.get("note"),
            )
        )
    return sorted(rows, key=lambda r: r.end)


def trajectory(kpi: Document, points: int = 12) -> list[tuple[date, float]]:
    """The trajectory sampled from baseline to target (a straight line needs two points)."""
    start, end = (
        date.fromisoformat(kpi["baseline"]["date"]),
        date.fromisoformat(kpi["target"]["date"]),
    )
    count = points if kpi["shape"] == "compound" else 2
    days = (end - start).days
    out = []
    for i in range(count):
        day = date.fromordinal(start.toordinal() + round(days * i / (count - 1)))
        out.append((day, expected(kpi, day)))
    return out
