"""A GMPP-style quarterly return: one row per proposal and gamechanger (pure).

Modelled on the shape of the UK Government Major Projects Portfolio's quarterly data
return: a Delivery Confidence Assessment (Red, Amber, Green) with its commentary,
baseline and forecast schedule dates, and what moved in the quarter (milestones, approved
KPI values, the completeness of the quarter's returns). The assessment is the monitor's
own rating (``shared.health``) mapped onto the IPA's three-point scale, not an IPA
assessment. There are no finance columns: the catalogue holds no budgets.

:func:`gmpp_rows` builds the rows from a :class:`~shared.exports.Standing` (the programme
as at the quarter's end, or as at now for a quarter not yet ended); :func:`gmpp_csv` and
:func:`gmpp_json` write them. The columns are described in ``docs/exports-gmpp.md``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from shared.catalogue import Kpi, Proposal
from shared.exports import PeriodResult, Standing
from shared.health import KpiHealth, MilestoneHealth, Rag, Reason, kpi_expected
from shared.periods import period_end, period_start
from shared.reporting import Status

QUARTER_PATTERN = r"^\d{4}-Q[1-4]$"
"""A calendar quarter, ``2026-Q3`` (July to September 2026)."""

Dca = Literal["Red", "Amber", "Green"]
DCA: dict[Rag, Dca] = {"green": "Green", "amber": "Amber", "red": "Red"}
"""The monitor's RAG as a Delivery Confidence Assessment on the three-point scale."""

ON_TRACK = "On track: no issue found."
"""The commentary of a proposal no rule has flagged."""

TRAJECTORY_PLACES = 2
"""Decimal places of the trajectory values (expected, target) a row carries."""
RATE_PLACES = 4
"""Decimal places of the returns' completeness rate."""


def quarter_bounds(quarter: str) -> tuple[date, date]:
    """The first and last day of ``quarter`` (``2026-Q3`` -> 2026-07-01, 2026-09-30);
    ValueError naming what is wrong with anything else."""
    if not re.fullmatch(QUARTER_PATTERN, quarter):
        if re.fullmatch(r"\d{4}-Q\d", quarter):
            raise ValueError(f"{quarter!r} is not a quarter: a year has quarters Q1 to Q4")
        raise ValueError(f"{quarter!r} is not a quarter: expected YYYY-Qn, as in 2026-Q3")
    return period_start(quarter), period_end(quarter)


@dataclass(frozen=True, slots=True)
class KpiLine:
    """One KPI a proposal evidences: its newest approved value for a period ending by the
    quarter's end, against the trajectory."""

    kpi: str
    title: str
    unit: str
    period: str | None
    """The period of ``actual``; None when no period ending by the quarter's end has an
    approved value."""
    actual: float | None
    """The approved value, as reported."""
    target: float | None
    """The expected value on the trajectory at the end of ``period``."""
    expected: float
    """The expected value on the trajectory at ``expected_on``."""
    expected_on: date
    """The quarter's last day."""


@dataclass(frozen=True, slots=True)
class QuarterReturns:
    """The returns of a proposal due in the quarter, as received by the as-at instant: its
    progress updates and the returns of the KPIs filed under it (each KPI's home
    proposal, ``Catalogue.home_of_kpi``), so no return counts for two proposals."""

    expected: int
    on_time: int
    late: int
    missing: int
    pending: int

    @property
    def received(self) -> int:
        return self.on_time + self.late

    @property
    def completeness(self) -> float | None:
        """Received of expected (pending ones included), 0..1 to four places; None when
        nothing is due in the quarter."""
        if not self.expected:
            return None
        return round(self.received / self.expected, RATE_PLACES)


@dataclass(frozen=True, slots=True)
class GmppRow:
    """One proposal or gamechanger in the quarterly return."""

    quarter: str
    as_at: datetime
    id: str
    name: str
    kind: Literal["proposal", "gamechanger"]
    column: str
    dca: Dca
    commentary: str
    """The reasons of the rating as sentences, or :data:`ON_TRACK`."""
    baseline_start: date
    baseline_end: date
    forecast_start: date
    forecast_end: date
    milestones_due: tuple[str, ...]
    """Milestone ids due in the quarter, in catalogue order (as are the lists below)."""
    milestones_completed: tuple[str, ...]
    """Completed in the quarter, by the as-at instant."""
    milestones_verified: tuple[str, ...]
    """Those of ``milestones_completed`` the office had verified by the as-at instant."""
    milestones_overdue: tuple[str, ...]
    """Overdue at the as-at instant, whenever they were due."""
    kpis: tuple[KpiLine, ...]
    returns: QuarterReturns


def gmpp_rows(standing: Standing, quarter: str) -> list[GmppRow]:
    """The return for ``quarter``: one row per proposal and gamechanger, in catalogue order.

    ``standing`` is the programme as at the quarter's end (or now, for a quarter not yet
    ended); ValueError for a malformed quarter.
    """
    start, end = quarter_bounds(quarter)
    catalogue = standing.catalogue
    returns: dict[str, list[Status]] = {}
    for status in standing.returns:
        o = status.obligation
        if start <= o.due <= end:
            owner = o.ref if o.kind == "update" else catalogue.home_of_kpi(o.ref)[1]
            returns.setdefault(owner, []).append(status)
    return [
        _row(standing, quarter, start, end, p, returns.get(p.id, ())) for p in catalogue.proposals
    ]


def _row(
    standing: Standing,
    quarter: str,
    start: date,
    end: date,
    proposal: Proposal,
    returns: Sequence[Status],
) -> GmppRow:
    catalogue = standing.catalogue
    health = standing.health.proposals[proposal.id]
    milestones = health.milestones
    as_at_day = standing.as_at.astimezone(UTC).date()
    completed = tuple(
        m.id
        for m in milestones
        if (day := standing.completed_on(proposal.id, m.id)) is not None
        and start <= day <= end
        and day <= as_at_day
    )
    kpis = catalogue.kpis_evidencing.get(proposal.id, ())
    lines = tuple(_kpi_line(k, standing.kpi_periods.get(k.id, ()), end) for k in kpis)
    return GmppRow(
        quarter=quarter,
        as_at=standing.as_at,
        id=proposal.id,
        name=proposal.title,
        kind=proposal.kind,
        column=health.column,
        dca=DCA[health.rag],
        commentary=_commentary(health.reasons, standing),
        baseline_start=catalogue.programme_start,
        baseline_end=max(m.due for m in proposal.milestones),
        forecast_start=_actual_start(milestones) or catalogue.programme_start,
        forecast_end=_forecast_end(standing, proposal.id, milestones),
        milestones_due=tuple(m.id for m in milestones if start <= m.due <= end),
        milestones_completed=completed,
        milestones_verified=tuple(m for m in completed if (proposal.id, m) in standing.verified),
        milestones_overdue=tuple(m.id for m in milestones if m.overdue),
        kpis=lines,
        returns=QuarterReturns(
            expected=len(returns),
            on_time=sum(s.state == "on_time" for s in returns),
            late=sum(s.state == "late" for s in returns),
            missing=sum(s.state == "missing" for s in returns),
            pending=sum(s.state == "pending" for s in returns),
        ),
    )


def _actual_start(milestones: Sequence[MilestoneHealth]) -> date | None:
    """The day of the earliest milestone state that moved off ``not_started``; the standing
    keeps each milestone's newest state only, so an earlier event it replaced is not seen."""
    moved = [
        m.updated_at for m in milestones if m.updated_at is not None and m.status != "not_started"
    ]
    return min(moved).astimezone(UTC).date() if moved else None


def _forecast_end(standing: Standing, proposal: str, milestones: Sequence[MilestoneHealth]) -> date:
    """The last completion once all are completed, else the latest forecast finish of the
    unfinished ones (forecasts already carry their dependencies)."""
    unfinished = [m.forecast or m.due for m in milestones if m.status != "completed"]
    if unfinished:
        return max(unfinished)
    days = [standing.completed_on(proposal, m.id) for m in milestones]
    return max(d for d in days if d is not None)


def _kpi_line(kpi: Kpi, periods: Sequence[PeriodResult], quarter_end: date) -> KpiLine:
    newest: PeriodResult | None = None
    for r in periods:
        if r.actual is None or r.end > quarter_end:
            continue
        # Periods come in period order; of two ending on one day the later one is kept.
        if newest is None or r.end >= newest.end:
            newest = r
    return KpiLine(
        kpi=kpi.id,
        title=kpi.title,
        unit=kpi.unit,
        period=newest.period if newest else None,
        actual=newest.actual if newest else None,
        target=round(newest.target, TRAJECTORY_PLACES) if newest else None,
        expected=round(kpi_expected(kpi, quarter_end), TRAJECTORY_PLACES),
        expected_on=quarter_end,
    )


def _commentary(reasons: Sequence[Reason], standing: Standing) -> str:
    if not reasons:
        return ON_TRACK
    return " ".join(_sentence(_detail(r, standing)) for r in reasons)


def _detail(reason: Reason, standing: Standing) -> str:
    """The reason's text, without a KPI value that is not approved: the rating reads the
    newest report of a KPI, approved or not, but only approved values leave the programme."""
    if reason.rule != "kpi_off_trajectory" or reason.kpi is None:
        return reason.detail
    health = standing.health.kpis[reason.kpi]
    if _approved(health, standing.kpi_periods.get(reason.kpi, ())):
        return reason.detail
    return (
        f"{health.title}: the latest return ({health.actual_period}) is off its trajectory; "
        "its value is not yet approved"
    )


def _approved(health: KpiHealth, periods: Sequence[PeriodResult]) -> bool:
    """Whether the value the rating read is the approved value of its period."""
    return any(
        r.period == health.actual_period and r.actual is not None and r.actual == health.actual
        for r in periods
    )


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


# Writing: one list of (column, cell) pairs makes the header and every line.


def _number(value: float) -> str:
    """A number as written in the CSV: integral values without a decimal point."""
    return f"{value:.15g}"


def _ids(ids: Sequence[str]) -> str:
    return "; ".join(ids)


def kpi_text(line: KpiLine) -> str:
    """One KPI as written in the ``kpis`` cell (see ``docs/exports-gmpp.md``):
    ``<kpi>: <actual> approved for <period> against <target> expected, <expected> expected
    at <quarter end>``, or ``<kpi>: no approved value, <expected> expected at <quarter end>``.
    """
    at = f"{_number(line.expected)} expected at {line.expected_on.isoformat()}"
    if line.actual is None or line.period is None or line.target is None:
        return f"{line.kpi}: no approved value, {at}"
    return (
        f"{line.kpi}: {_number(line.actual)} approved for {line.period} against "
        f"{_number(line.target)} expected, {at}"
    )


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rate(value: float | None) -> str:
    return "" if value is None else _number(value)


_CELLS: tuple[tuple[str, Callable[[GmppRow], str]], ...] = (
    ("quarter", lambda r: r.quarter),
    ("as_at", lambda r: _instant(r.as_at)),
    ("id", lambda r: r.id),
    ("name", lambda r: r.name),
    ("kind", lambda r: r.kind),
    ("column", lambda r: r.column),
    ("dca", lambda r: r.dca),
    ("commentary", lambda r: r.commentary),
    ("baseline_start", lambda r: r.baseline_start.isoformat()),
    ("baseline_end", lambda r: r.baseline_end.isoformat()),
    ("forecast_start", lambda r: r.forecast_start.isoformat()),
    ("forecast_end", lambda r: r.forecast_end.isoformat()),
    ("milestones_due_count", lambda r: str(len(r.milestones_due))),
    ("milestones_due", lambda r: _ids(r.milestones_due)),
    ("milestones_completed_count", lambda r: str(len(r.milestones_completed))),
    ("milestones_completed", lambda r: _ids(r.milestones_completed)),
    ("milestones_verified_count", lambda r: str(len(r.milestones_verified))),
    ("milestones_verified", lambda r: _ids(r.milestones_verified)),
    ("milestones_overdue_count", lambda r: str(len(r.milestones_overdue))),
    ("milestones_overdue", lambda r: _ids(r.milestones_overdue)),
    ("kpis", lambda r: "; ".join(kpi_text(k) for k in r.kpis)),
    ("returns_expected", lambda r: str(r.returns.expected)),
    ("returns_on_time", lambda r: str(r.returns.on_time)),
    ("returns_late", lambda r: str(r.returns.late)),
    ("returns_missing", lambda r: str(r.returns.missing)),
    ("returns_pending", lambda r: str(r.returns.pending)),
    ("returns_completeness", lambda r: _rate(r.returns.completeness)),
)

COLUMNS: tuple[str, ...] = tuple(name for name, _cell in _CELLS)
"""The CSV header, in order."""


def gmpp_csv(rows: Sequence[GmppRow]) -> str:
    """The rows as RFC 4180 CSV: a header of :data:`COLUMNS`, CRLF line ends, a field
    quoted when it holds a comma, a double quote (doubled) or a line break."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    writer.writerows([cell(row) for _name, cell in _CELLS] for row in rows)
    return out.getvalue()


def gmpp_json(rows: Sequence[GmppRow]) -> list[dict[str, Any]]:
    """The rows as JSON-ready data: the CSV's values under its column names, with lists
    for milestones and KPIs (and no counts, which are their lengths), numbers as numbers
    and ``null`` for a value that is absent."""
    return [_json(row) for row in rows]


def _json(row: GmppRow) -> dict[str, Any]:
    r = row.returns
    return {
        "quarter": row.quarter,
        "as_at": _instant(row.as_at),
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "column": row.column,
        "dca": row.dca,
        "commentary": row.commentary,
        "baseline_start": row.baseline_start.isoformat(),
        "baseline_end": row.baseline_end.isoformat(),
        "forecast_start": row.forecast_start.isoformat(),
        "forecast_end": row.forecast_end.isoformat(),
        "milestones_due": list(row.milestones_due),
        "milestones_completed": list(row.milestones_completed),
        "milestones_verified": list(row.milestones_verified),
        "milestones_overdue": list(row.milestones_overdue),
        "kpis": [
            {
                "kpi": k.kpi,
                "title": k.title,
                "unit": k.unit,
                "period": k.period,
                "actual": k.actual,
                "target": k.target,
                "expected": k.expected,
                "expected_on": k.expected_on.isoformat(),
            }
            for k in row.kpis
        ],
        "returns_expected": r.expected,
        "returns_on_time": r.on_time,
        "returns_late": r.late,
        "returns_missing": r.missing,
        "returns_pending": r.pending,
        "returns_completeness": r.completeness,
    }
