"""Returns upwards: IATI 2.03 activities for funders and a GMPP-style quarterly return for
government, from the same stored events and the same rating as the board.

:func:`read_standing` reads the programme as at an instant in one session: the as-at state
and its rating (what ``/v1/programme?as_at=`` shows), every KPI report up to it with the
locks its reviews set (so only **approved** values leave), the verified completions, and
the returns owed and received by then. The builders in ``shared/exports`` are pure
functions of that standing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic_core import to_json

from services.aggregator import queries, returns
from services.aggregator.api import (
    UNAVAILABLE,
    UNPROCESSABLE,
    Clock,
    FieldProblem,
    ProblemRoute,
    Sessions,
    problem_response,
)
from services.aggregator.board import Locks
from shared.catalogue import Catalogue, Kpi
from shared.events import Timestamp
from shared.exports import PeriodResult, Standing
from shared.exports.gmpp import gmpp_csv, gmpp_json, gmpp_rows, quarter_bounds
from shared.exports.iati import iati_activities
from shared.health import KpiObservation, kpi_expected, programme_health
from shared.instants import end_of_day
from shared.periods import period_end, period_of, period_start
from shared.reporting import next_period, obligations, statuses
from shared.reviews import kpi_target, milestone_target


async def read_standing(*, catalogue: Catalogue, sessions: Sessions, as_at: datetime) -> Standing:
    """The programme as at ``as_at``, read in one session (see the module's docstring)."""
    async with sessions() as session:
        state = await queries.load_state(session=session, as_at=as_at)
        reports = await queries.kpi_log(
            session=session, kpis=[k.id for k in catalogue.kpis], as_at=as_at
        )
        completions = {
            milestone_target(m.proposal, m.milestone): (m.proposal, m.milestone)
            for m in state.milestones.values()
            if m.status == "completed"
        }
        targets = {kpi_target(r.kpi, r.period, r.source) for r in reports} | set(completions)
        locks = await returns.locks(session=session, targets=targets, as_at=as_at)
        received = await returns.received_returns(
            session=session, catalogue=catalogue, received_by=as_at
        )
    today = as_at.astimezone(UTC).date()
    owed = obligations(catalogue, today)
    by_kpi: dict[str, list[KpiObservation]] = {k.id: [] for k in catalogue.kpis}
    for r in reports:  # in fold order, kept within each KPI
        by_kpi.setdefault(r.kpi, []).append(r)
    return Standing(
        catalogue=catalogue,
        as_at=as_at,
        health=programme_health(catalogue, state, as_at),
        kpi_periods={
            k.id: kpi_results(catalogue, k, by_kpi[k.id], locks, today) for k in catalogue.kpis
        },
        verified=frozenset(
            key
            for target, key in completions.items()
            if (lock := locks.get(target)) is not None and lock.action == "verify"
        ),
        returns=tuple(statuses(owed, received, today)),
    )


def kpi_results(
    catalogue: Catalogue,
    kpi: Kpi,
    reports: Iterable[KpiObservation],
    locks: Locks,
    today: date,
) -> tuple[PeriodResult, ...]:
    """From ``kpi``'s ``reports``: each period of its return frequency from the one holding
    the programme's start to the last ended by ``today``, and any other period with an
    approved return: the trajectory at its end and the approved value, if any.

    A period's approved value is the newest (by event time) of its reporters' approved
    returns; a reporter's return is its newest applied report of the period (what a review
    is of: reports after an approval are kept aside, never applied)."""
    newest: dict[tuple[str, str], KpiObservation] = {}
    for r in reports:  # ``kpi``'s, in fold order: the last one of a key is the newest
        newest[r.period, r.source] = r
    approved: dict[str, tuple[KpiObservation, datetime]] = {}
    for (period, reporter), r in newest.items():
        lock = locks.get(kpi_target(kpi.id, period, reporter))
        if lock is None or lock.action != "approve":
            continue
        if period not in approved or r.event_time > approved[period][0].event_time:
            approved[period] = (r, lock.event_time)
    periods = set(approved)
    if kpi.returns is not None:
        frequency = kpi.returns.frequency
        period = period_of(catalogue.programme_start, frequency)
        while period_end(period) <= today:
            periods.add(period)
            period = next_period(period, frequency)
    out = []
    for period in sorted(periods, key=lambda p: (period_end(p), p)):
        end = period_end(period)
        found = approved.get(period)
        out.append(
            PeriodResult(
                period=period,
                start=period_start(period),
                end=end,
                target=kpi_expected(kpi, end),
                actual=None if found is None else float(found[0].value),
                reporter=None if found is None else found[0].source,
                approved_at=None if found is None else found[1],
            )
        )
    return tuple(out)


AsAtExport = Annotated[
    Timestamp | None,
    Query(
        description="The programme as at this instant (RFC 3339), as the board shows it for "
        "?as_at=: from events whose time is not after it, approved values only; not before "
        "the programme's start, not in the future. Default: now"
    ),
]
Quarter = Annotated[
    str,
    Query(
        description="The quarter of the return, as 2026-Q3: rated as at its last moment, or "
        "as at now while it has not ended",
        examples=["2026-Q3"],
    ),
]


def build_exports_router(*, catalogue: Catalogue, sessions: Sessions, clock: Clock) -> APIRouter:
    """``GET /v1/exports/iati-activities.xml`` and ``GET /v1/exports/gmpp.csv`` (and
    ``.json``): read-only, from the store at the instant asked."""
    router = APIRouter(route_class=ProblemRoute, tags=["exports"])
    start = catalogue.programme_start

    def refused(name: str, reason: str) -> JSONResponse:
        return problem_response(
            422, f"invalid query parameter: {name}", [FieldProblem(field=name, reason=reason)]
        )

    async def standing(as_at: datetime) -> Standing:
        with queries.collector_paused():
            return await read_standing(catalogue=catalogue, sessions=sessions, as_at=as_at)

    @router.get(
        "/v1/exports/iati-activities.xml",
        summary="IATI 2.03 activities: one per proposal and gamechanger, with results",
        response_class=Response,
        responses={
            200: {"content": {"application/xml": {}}},
            **UNPROCESSABLE,
            **UNAVAILABLE,
        },
    )
    async def get_iati(as_at: AsAtExport = None) -> Response:
        now = clock()
        at = as_at or now
        if at > now:
            return refused("as_at", f"{at.isoformat()} is in the future (now {now.isoformat()})")
        if (day := at.astimezone(UTC).date()) < start:
            # The day is what is compared: a date picked in a form is its last microsecond.
            return refused("as_at", f"{day} is before the programme's start ({start})")
        found = await standing(at)
        body = await asyncio.to_thread(iati_activities, found)
        return Response(body, media_type="application/xml")

    async def gmpp(quarter: str) -> Standing | JSONResponse:
        """The standing a quarter's return is made from, or the 422 naming ``quarter``."""
        try:
            first, last = quarter_bounds(quarter)
        except ValueError as exc:
            return refused("quarter", str(exc))
        now = clock()
        if first > now.astimezone(UTC).date():
            return refused("quarter", f"{quarter} has not started (today is {now.date()})")
        if last < start:
            return refused("quarter", f"{quarter} ended before the programme's start ({start})")
        return await standing(end_of_day(last, now))

    @router.get(
        "/v1/exports/gmpp.csv",
        summary="A GMPP-style quarterly return, one row per proposal and gamechanger (CSV)",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_gmpp_csv(quarter: Quarter) -> Response:
        found = await gmpp(quarter)
        if isinstance(found, JSONResponse):
            return found
        body = gmpp_csv(gmpp_rows(found, quarter))
        return Response(
            body,
            media_type="text/csv; charset=utf-8; header=present",
            headers={"Content-Disposition": f'attachment; filename="cotn-gmpp-{quarter}.csv"'},
        )

    @router.get(
        "/v1/exports/gmpp.json",
        summary="The GMPP-style quarterly return as JSON (the same rows)",
        response_class=Response,
        responses={200: {"content": {"application/json": {}}}, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_gmpp_json(quarter: Quarter) -> Response:
        found = await gmpp(quarter)
        if isinstance(found, JSONResponse):
            return found
        body = {
            "quarter": quarter,
            "as_at": found.as_at,
            "rows": gmpp_json(gmpp_rows(found, quarter)),
        }
        return Response(to_json(body), media_type="application/json")

    return router
