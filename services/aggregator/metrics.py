"""``/metrics``: the operational registry plus programme gauges read from stored state.

Programme metrics come from stored state, not process memory: each scrape serves the
text of the typed health records of the live board's snapshot (the same
:class:`~services.aggregator.snapshot.LiveBoard` as ``/v1/programme``, rebuilt when the
store's version or the clock makes it stale, the text written with it by ``gauges.py``),
never the read API's response data, so a restart or a second replica exports the same
values (CONTRACT §6). While the database cannot answer, a scrape still succeeds, in the way
of Prometheus exporters whose backend is down: ``cotn_aggregator_database_up`` turns 0 and
the programme gauges repeat the last read, so the stall alert (a timestamp against
``time()``) keeps its course instead of resolving until the database is back. A process
that has never read the store exports no programme gauges.
The reporting and review gauges are read from the same store in the background, at most
every ``office_metrics_seconds`` (:class:`OfficeGauges`): they are the costly part at scale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.core import GaugeMetricFamily

from services.aggregator.api import (
    STORE_UNAVAILABLE,
    Clock,
    ProblemRoute,
    Sessions,
    log_unreadable,
)
from services.aggregator.board import NO_LOCKS
from services.aggregator.gauges import (
    Gauge,
    approval_gauge,
    programme_gauges,
    render_gauges,
)
from services.aggregator.office import read_reporting
from services.aggregator.opmetrics import OperationalMetrics
from services.aggregator.queries import collector_paused
from services.aggregator.returns import Queue, column_of_return, read_queue
from services.aggregator.snapshot import LiveBoard
from shared.catalogue import Catalogue
from shared.health import ProgrammeHealth
from shared.reporting import STATES, ReturnKey, Status, silent_reporters


def programme_families(catalogue: Catalogue, health: ProgrammeHealth) -> list[GaugeMetricFamily]:
    """Every programme gauge of one snapshot (the office's with nothing owed nor
    received), as prometheus_client families."""
    gauges = [
        *programme_gauges(catalogue, health),
        approval_gauge(catalogue, health, NO_LOCKS),
        *office_gauges(catalogue, [], [], NO_QUEUE),
    ]
    return [gauge.family() for gauge in gauges]


def office_gauges(
    catalogue: Catalogue,
    found: Sequence[Status],
    extra: Sequence[ReturnKey],
    queue: Queue,
) -> list[Gauge]:
    """The reporting and review gauges: each return owed by state, completeness and
    timeliness per authority, the silent reporters and the review queue; a pure function."""
    returns_ = Gauge(
        "cotn_reporting_returns",
        "Returns owed by the authority for the period, by state (on_time, late, missing, "
        "pending); extra: received but not owed, never in the rates",
        ["authority", "column", "period", "state"],
    )
    completeness_ = Gauge(
        "cotn_reporting_completeness_ratio",
        "Returns received of those due (past their due day), 0..1",
        ["authority", "column"],
    )
    timeliness = Gauge(
        "cotn_reporting_timeliness_ratio",
        "Returns received on time of those due (past their due day), 0..1",
        ["authority", "column"],
    )
    silent = Gauge(
        "cotn_reporter_silent",
        "1 while the authority's newest due return of the obligation (a KPI or a proposal's "
        "progress updates) is missing",
        ["authority", "column", "obligation", "kind"],
    )
    waiting = Gauge(
        "cotn_reviews_waiting",
        "Returns submitted and waiting for the programme office's review",
        ["column", "kind"],
    )
    returned = Gauge(
        "cotn_reviews_returned",
        "Returns the office returned for correction, not yet resubmitted",
        ["column", "kind"],
    )
    aside = Gauge(
        "cotn_events_kept_aside",
        "Events accepted before a lock reached the column service: stored, never applied",
        ["column"],
    )
    kpi_returns = Gauge(
        "cotn_kpi_returns", "KPI returns received, by review state", ["kpi", "state"]
    )
    cells: dict[tuple[str, str, str], dict[str, int]] = {}
    rates: dict[tuple[str, str], list[int]] = {}
    for status in found:
        o = status.obligation
        cell = cells.setdefault((o.authority, o.column, o.period), dict.fromkeys(CELL_STATES, 0))
        cell[status.state] += 1
        if status.state != "pending":
            rate = rates.setdefault((o.authority, o.column), [0, 0, 0])
            rate[0] += 1
            rate[1] += status.state != "missing"
            rate[2] += status.state == "on_time"
    for kind, ref, authority, period in extra:
        column = column_of_return(catalogue, kind, ref)
        cell = cells.setdefault((authority, column, period), dict.fromkeys(CELL_STATES, 0))
        cell["extra"] += 1
    for labels, cell in sorted(cells.items()):
        for state, n in cell.items():
            returns_.add_metric((*labels, state), n)
    for pair, (due, received, on_time) in sorted(rates.items()):
        completeness_.add_metric(pair, received / due)
        timeliness.add_metric(pair, on_time / due)
    for s in silent_reporters(found):
        silent.add_metric((s.authority, s.column, s.ref, s.kind), 1)
    queued = {(c.id, k): [0, 0] for c in catalogue.columns for k in ("kpi", "milestone")}
    by_kpi = {(k.id, state): 0 for k in catalogue.kpis for state in KPI_REVIEW_STATES}
    for r in queue.returns:
        counts = queued[(r.column, r.kind)]
        counts[0] += r.state == "submitted"
        counts[1] += r.state == "returned"
        if r.kpi is not None:
            by_kpi[(r.kpi, r.state)] += 1
    for (column, kind), (n_waiting, n_returned) in queued.items():
        waiting.add_metric((column, kind), n_waiting)
        returned.add_metric((column, kind), n_returned)
    kept = dict.fromkeys(catalogue.column_by_id, 0)
    for held in queue.kept_aside:
        kept[held.column] = kept.get(held.column, 0) + 1
    for column, n in kept.items():
        aside.add_metric((column,), n)
    for (kpi_id, state), n in by_kpi.items():
        kpi_returns.add_metric((kpi_id, state), n)
    return [
        returns_, completeness_, timeliness, silent, waiting, returned, aside, kpi_returns,
    ]  # fmt: skip


NO_QUEUE = Queue([], [])
CELL_STATES = (*STATES, "extra")
KPI_REVIEW_STATES = ("submitted", "approved", "returned")


class OfficeGauges:
    """The reporting and review gauges' text, read again in the background at most every
    ``every`` seconds.

    They rate every return owed against every return received and every review: at a
    large programme's scale (figure 7 of ``make bench``) many times the cost of the rest of
    a scrape, and they change with returns and reviews, not by the second. So a scrape
    serves the last text and, once it is ``every`` seconds old, starts the next read
    without waiting for it; only the first scrape waits, having nothing to serve. A second
    replica reads the same store and so exports the same values, ``every`` seconds apart
    at most.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[bytes]],
        every: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._every = every
        self._monotonic = monotonic
        self._text: bytes | None = None
        self._read_at = 0.0
        self._refresh: asyncio.Task[None] | None = None

    async def text(self) -> bytes:
        """The gauges' text; raises what the store raises while nothing was ever read."""
        if self._text is None:
            await self._read_now()
        elif self._monotonic() - self._read_at >= self._every and not self._refreshing():
            self._refresh = asyncio.ensure_future(self._read_later())
        return self._text or b""

    def _refreshing(self) -> bool:
        return self._refresh is not None and not self._refresh.done()

    async def _read_now(self) -> None:
        started = self._monotonic()
        self._text = await self._read()
        self._read_at = started

    async def _read_later(self) -> None:
        try:
            await self._read_now()
        except STORE_UNAVAILABLE as exc:  # the last text stays; the next scrape tries again
            log_unreadable("/metrics (reporting)", exc)


def build_metrics_router(
    *,
    catalogue: Catalogue,
    sessions: Sessions,
    clock: Clock,
    operational: OperationalMetrics,
    office_every: float = 30.0,
    live: LiveBoard | None = None,
) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format: ``operational``'s registry, then the
    programme gauges of ``live``'s snapshot (shared with the read API when given), then the
    reporting and review gauges (read every ``office_every`` seconds: :class:`OfficeGauges`)."""
    router = APIRouter(route_class=ProblemRoute)
    live = live or LiveBoard(catalogue=catalogue, sessions=sessions, clock=clock)

    last_read = b""

    async def read_office() -> bytes:
        with collector_paused():
            today = clock().astimezone(UTC).date()
            found, extra = await read_reporting(catalogue=catalogue, sessions=sessions, today=today)
            async with sessions() as session:
                queue = await read_queue(session=session, catalogue=catalogue)
            gauges = await asyncio.to_thread(office_gauges, catalogue, found, extra, queue)
            return await asyncio.to_thread(render_gauges, gauges)

    office = OfficeGauges(read_office, office_every)

    @router.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics: operations and programme state",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}}},
    )
    async def metrics() -> Response:
        nonlocal last_read
        try:
            last_read = (await live.snapshot(lag=True)).gauges
            last_read += await office.text()
            operational.database_up.set(1)
        except STORE_UNAVAILABLE as exc:
            log_unreadable("/metrics", exc)
            operational.database_up.set(0)
        # 0.0.4 is what generate_latest writes and what every Prometheus version reads.
        body = generate_latest(operational.registry) + last_read
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
