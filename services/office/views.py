"""What the pages show, from the read API's plain JSON: labels, tags, summaries, KPI series,
as-at banners.

Pure functions of the documents (and a clock where a page says "ago"); the templates only
lay them out. Text from events stays data: nothing here builds HTML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from shared.periods import period_end, period_of, period_start

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


def milestone_tag(milestone: Document) -> Tag:
    """A milestone's status; a completion says whether the office has verified it."""
    if milestone["status"] != "completed":
        return status_tag(str(milestone["status"]))
    if milestone.get("verification") == "verified":
        return Tag("Verified", "green")
    return Tag("Completed, unverified", "turquoise")


def approval_tag(approved: bool | None) -> Tag:
    """Whether a KPI actual is approved by the office; "No data" with no actual."""
    if approved is None:
        return Tag("No data", "grey")
    return Tag("Approved", "green") if approved else Tag("Not yet approved", "grey")


def completion_summary(proposal: Document) -> str:
    """``2 of 6 completed (1 verified, 1 unverified)``, or ``0 of 6 completed``."""
    milestones = proposal.get("milestones") or ()
    done = [m for m in milestones if m["status"] == "completed"]
    text = f"{len(done)} of {len(milestones)} completed"
    if not done:
        return text
    verified = sum(m.get("verification") == "verified" for m in done)
    return f"{text} ({verified} verified, {len(done) - verified} unverified)"


def rag_tag(rag: str) -> Tag:
    return Tag(RAG_LABEL.get(rag, rag), rag)


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
    """The audit-trail filter that lists every event about what a reason is about: its KPI,
    or its milestone (of this proposal), else the proposal's milestone events."""
    if reason.get("kpi"):
        return {"kpi": str(reason["kpi"])}
    if reason.get("milestone"):
        return {"proposal": proposal_id, "milestone": str(reason["milestone"])}
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


# -- KPI series (GET /v1/kpis/{id}) -----------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One report of a period: the first, or a correction."""

    value: float
    reported_at: datetime
    source: str
    event: Document


@dataclass(frozen=True)
class PeriodRow:
    """A reported period as the aggregator rates it: its newest report, the expected value
    at its end, on track or not, and every report (first, then each correction)."""

    period: str
    end: date
    actual: float
    expected: float
    on_track: bool
    reported_at: datetime
    source: str
    event: Document
    reports: tuple[Report, ...]
    approved: bool = False
    """Whether the programme office approved the actual (its return for this period)."""

    @property
    def corrections(self) -> tuple[Report, ...]:
        """The reports the actual replaced, oldest first."""
        return tuple(r for r in self.reports if r.event.get("id") != self.event.get("id"))


def kpi_periods(series: Document) -> list[PeriodRow]:
    """Each reported period of a KPI's series, in period order."""
    return [
        PeriodRow(
            period=str(p["period"]),
            end=date.fromisoformat(p["period_end"]),
            actual=float(p["actual"]),
            expected=float(p["expected"]),
            on_track=bool(p["on_track"]),
            reported_at=datetime.fromisoformat(p["reported_at"]),
            source=str(p["source"]),
            event=p["event"],
            reports=tuple(
                Report(
                    value=float(r["value"]),
                    reported_at=datetime.fromisoformat(r["reported_at"]),
                    source=str(r["source"]),
                    event=r["event"],
                )
                for r in p.get("reports") or ()
            ),
            approved=bool(p.get("approved")),
        )
        for p in series.get("periods") or ()
    ]


def trajectory(series: Document) -> list[tuple[date, float]]:
    """The trajectory's points as the aggregator gives them (baseline to target)."""
    return [(date.fromisoformat(p["date"]), float(p["value"])) for p in series["trajectory"]]


# -- as-at views -------------------------------------------------------------------------


def day_label(day: date) -> str:
    """``1 March 2026``."""
    return f"{day.day} {day:%B %Y}"


def instant_label(value: str) -> str:
    """A picked date as a person reads it (``1 March 2026``), else the time (UTC)."""
    try:
        return day_label(date.fromisoformat(value.strip()))
    except ValueError:
        return when(value.strip().replace("Z", "+00:00"))


def view_banner(given: Mapping[str, str]) -> str:
    """Which past board a page shows: "As at 1 March 2026, as now known", "As at 1 March
    2026, as it was shown on 5 March 2026", or "As it was shown on 5 March 2026"."""
    as_at, known_at = given.get("as_at"), given.get("known_at")
    if as_at and known_at:
        return f"As at {instant_label(as_at)}, as it was shown on {instant_label(known_at)}"
    if as_at:
        return f"As at {instant_label(as_at)}, as now known"
    return f"As it was shown on {instant_label(known_at or '')}"


def audit_link(event: Document) -> dict[str, str]:
    """The audit-trail filter that shows exactly this event (its source and id)."""
    return {"source": str(event["source"]), "id": str(event["id"])}


def lag_label(seconds: float) -> str:
    """A dependency's lag in days: ``no lag``, ``1 day``, ``14 days``."""
    days = round(seconds / 86400)
    if days == 0:
        return "no lag"
    return f"{days} day" if abs(days) == 1 else f"{days} days"


CHANGE_LABEL = {"rag": "RAG", "stalled": "stalled", "overdue": "overdue"}


# -- reporting (GET /v1/reporting, /v1/reporting/{authority}) -----------------------------


@dataclass(frozen=True)
class Cell:
    """One authority's returns for one period: "received/expected", the counts and a state
    as a word and a colour."""

    received: int
    expected: int
    on_time: int
    late: int
    missing: int
    pending: int
    extra: int
    tag: Tag

    @property
    def counts(self) -> str:
        """``3 on time, 1 late, 1 missing`` (and what is not yet due or was not owed)."""
        parts = [f"{self.on_time} on time", f"{self.late} late", f"{self.missing} missing"]
        if self.pending:
            parts.append(f"{self.pending} not yet due")
        if self.extra:
            parts.append(f"{self.extra} not owed")
        return ", ".join(parts)


def cell_tag(row: Document) -> Tag:
    """Missing beats late beats not yet due: the worst of the period's returns."""
    if row["missing"]:
        return Tag("Missing", "red")
    if row["late"]:
        return Tag("Late", "amber")
    if row["pending"]:
        return Tag("Not yet due", "grey")
    if row["expected"]:
        return Tag("Complete", "green")
    return Tag("Nothing owed", "grey")


@dataclass(frozen=True)
class Grid:
    """Completeness as a table: rows authorities, columns periods."""

    authorities: tuple[str, ...]
    periods: tuple[str, ...]
    cells: Mapping[tuple[str, str], Cell]

    def cell(self, authority: str, period: str) -> Cell | None:
        return self.cells.get((authority, period))


def completeness_grid(rows: list[Document]) -> Grid:
    """The read API's completeness rows laid out by authority (rows) and period (columns)."""
    cells = {
        (str(r["authority"]), str(r["period"])): Cell(
            received=int(r["received"]),
            expected=int(r["expected"]),
            on_time=int(r["on_time"]),
            late=int(r["late"]),
            missing=int(r["missing"]),
            pending=int(r["pending"]),
            extra=int(r["extra"]),
            tag=cell_tag(r),
        )
        for r in rows
    }
    return Grid(
        authorities=tuple(sorted({a for a, _ in cells})),
        periods=tuple(sorted({p for _, p in cells})),
        cells=cells,
    )


def owed_label(kind: str, obligation: str) -> str:
    """What a return is: ``KPI return: exports`` or ``Progress update on 2b``."""
    return f"KPI return: {obligation}" if kind == "kpi" else f"Progress update on {obligation}"


def return_label(r: Document) -> str:
    """A return in the review queue: ``exports 2026-Q1: 12.5`` or ``1a/joint-position
    completed``."""
    if r["kind"] == "kpi":
        value = "" if r.get("value") is None else f": {number(r['value'])}"
        return f"{r['kpi']} {r['period']}{value}"
    return f"{r['proposal']}/{r['milestone']} completed"


def quiet_of(board: Document | None, column: str | None) -> dict[str, list[Document]]:
    """The board's other two kinds of quiet: stalled proposals and overdue milestones (of
    one column, if given)."""
    if board is None:
        return {"stalled": [], "overdue": []}
    found = [
        {**p, "column": c["id"]}
        for c in board["columns"]
        if column is None or c["id"] == column
        for p in c["proposals"]
    ]
    return {
        "stalled": [p for p in found if p["stalled"]],
        "overdue": [
            {"proposal": p, "milestone": m}
            for p in found
            for m in p.get("milestones") or ()
            if m.get("overdue")
        ],
    }


# -- exports -----------------------------------------------------------------------------


def quarters_since(start: date, today: date) -> list[str]:
    """The calendar quarters from the one holding ``start`` (the programme's) to the one
    holding ``today``, newest first: those a GMPP-style return can be asked for."""
    found = []
    quarter = period_of(start, "quarterly")
    while period_start(quarter) <= today:
        found.append(quarter)
        quarter = period_of(date.fromordinal(period_end(quarter).toordinal() + 1), "quarterly")
    return found[::-1]


def last_ended_quarter(quarters: list[str], today: date) -> str | None:
    """The newest of ``quarters`` that has ended before ``today`` (the return people file),
    else the newest one; None if there are none."""
    ended = [q for q in quarters if period_end(q) < today]
    return ended[0] if ended else (quarters[0] if quarters else None)


def quarter_label(quarter: str, today: date) -> str:
    """``2026-Q3: July to September 2026``; one still running says it is as at now."""
    first, last = period_start(quarter), period_end(quarter)
    label = f"{quarter}: {first:%B} to {last:%B %Y}"
    return label + (" (so far: as at now)" if last >= today else "")


def file_stem(value: str) -> str:
    """``value`` made safe for a file name (and a quoted header): letters, digits, dots and
    hyphens, anything else a hyphen. ``2026-09-30T12:00:00Z`` -> ``2026-09-30T12-00-00Z``."""
    return re.sub(r"[^0-9A-Za-z.-]+", "-", value)
