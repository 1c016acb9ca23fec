"""``/metrics``: the operational registry plus programme gauges read from stored state.

Programme metrics come from stored state, not process memory: each scrape renders the
typed health records of the live board's snapshot (the same
:class:`~services.aggregator.snapshot.LiveBoard` as ``/v1/programme``, rebuilt when the
store's version or the clock makes it stale, the text rendered once per snapshot), never
the read API's response data, so a restart or a second replica exports the same values
(CONTRACT §6). While the database cannot answer, a scrape still succeeds, in the way of
Prometheus exporters whose backend is down: ``cotn_aggregator_database_up`` turns 0 and
the programme gauges repeat the last read, so
the stall alert (a timestamp against ``time()``) keeps its course instead of resolving
until the database is back. A process that has never read the store exports no programme gauges.
The reporting and review gauges are read from the same store in the background, at most
every ``office_metrics_seconds`` (:class:`OfficeGauges`): they are the costly part at scale.

The programme gauges are rendered by :func:`render_gauges`, which writes the text that
prometheus_client's ``generate_latest`` writes for the same families (label names sorted,
values as Go formats them) without building a sample object per series: a programme of a
thousand proposals has tens of thousands of series, scraped every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from services.aggregator.api import (
    STORE_UNAVAILABLE,
    Clock,
    ProblemRoute,
    Sessions,
    log_unreadable,
)
from services.aggregator.board import NO_LOCKS, Locks, milestone_counts, rag_value
from services.aggregator.board import approved as approval
from services.aggregator.office import read_reporting
from services.aggregator.opmetrics import OperationalMetrics
from services.aggregator.queries import collector_paused
from services.aggregator.returns import Queue, column_of_return, read_queue
from services.aggregator.snapshot import LiveBoard
from shared.catalogue import Catalogue, Proposal
from shared.health import ProgrammeHealth, ProposalHealth
from shared.reporting import STATES, ReturnKey, Status, silent_reporters

PROPOSAL_LABELS = ["column", "proposal"]


@dataclass
class Gauge:
    """A gauge family as plain tuples: label values in ``labels`` order, and a value."""

    name: str
    documentation: str
    labels: list[str]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.samples.append((tuple(labels), value))

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.samples:
            family.add_metric(labels, value)
        return family


def programme_families(catalogue: Catalogue, health: ProgrammeHealth) -> list[GaugeMetricFamily]:
    """Every programme gauge of one snapshot (the office's with nothing owed nor
    received), as prometheus_client families."""
    gauges = [
        *programme_gauges(catalogue, health),
        approval_gauge(catalogue, health, NO_LOCKS),
        *office_gauges(catalogue, [], [], NO_QUEUE),
    ]
    return [gauge.family() for gauge in gauges]


def programme_gauges(catalogue: Catalogue, health: ProgrammeHealth) -> list[Gauge]:
    """Every programme gauge of one snapshot, from the catalogue and the typed health
    records; a pure function."""
    gauges = proposal_gauges()
    for column in catalogue.columns:
        for proposal in catalogue.proposals_of(column.id):
            add_proposal(gauges, column.id, proposal, health.proposals[proposal.id])
    return [*gauges, *kpi_gauges(catalogue, health)]


def proposal_gauges() -> list[Gauge]:
    """The per-proposal programme gauges, empty, in their order on ``/metrics``."""
    return [
        Gauge("cotn_proposal_rag", "Proposal RAG: 0 green, 1 amber, 2 red", PROPOSAL_LABELS),
        Gauge(
            "cotn_proposal_stalled",
            "1 when the proposal has unfinished milestones and no milestone event within its "
            "stall threshold",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_proposal_last_progress_timestamp_seconds",
            "Event time of the proposal's newest milestone event, or the programme start "
            "before any; stalled when time() - this > cotn_proposal_stall_threshold_seconds",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_proposal_stall_threshold_seconds",
            "Seconds without a milestone event after which the proposal is stalled (catalogue)",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_proposal_unfinished_milestones",
            "Milestones of the proposal not yet completed",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_milestones",
            "Milestones of the proposal in each status",
            [*PROPOSAL_LABELS, "status"],
        ),
        Gauge(
            "cotn_milestone_overdue",
            "1 when the milestone's due date has passed and it is not completed",
            [*PROPOSAL_LABELS, "milestone"],
        ),
        Gauge(
            "cotn_proposal_info",
            "Always 1: the proposal's title and kind, to join onto other proposal metrics",
            [*PROPOSAL_LABELS, "title", "kind"],
        ),
    ]


def add_proposal(gauges: list[Gauge], column: str, proposal: Proposal, p: ProposalHealth) -> None:
    """One proposal's samples, added to :func:`proposal_gauges`' gauges."""
    rag, stalled, last_progress, threshold, unfinished, milestones, overdue, info = gauges
    labels = (column, proposal.id)
    counts = milestone_counts(p)
    rag.add_metric(labels, rag_value(p.rag))
    stalled.add_metric(labels, int(p.stalled))
    last_progress.add_metric(labels, p.last_progress.timestamp())
    threshold.add_metric(labels, p.stall_threshold.total_seconds())
    unfinished.add_metric(labels, len(p.milestones) - counts["completed"])
    for status, count in counts.items():
        milestones.add_metric((*labels, status), count)
    for m in p.milestones:
        overdue.add_metric((*labels, m.id), int(m.overdue))
    info.add_metric((*labels, proposal.title, proposal.kind), 1)


def kpi_gauges(catalogue: Catalogue, health: ProgrammeHealth) -> list[Gauge]:
    """The per-KPI programme gauges of one snapshot."""
    value = Gauge("cotn_kpi_value", "The KPI's latest reported actual", ["kpi"])
    expected = Gauge("cotn_kpi_expected", "The KPI's trajectory value now", ["kpi"])
    target = Gauge("cotn_kpi_target", "The KPI's target value", ["kpi"])
    off = Gauge(
        "cotn_kpi_off_trajectory",
        "1 when the latest actual is worse than its trajectory beyond the KPI's tolerance",
        ["kpi"],
    )
    evidence = Gauge(
        "cotn_kpi_evidence",
        "Always 1: a proposal the KPI evidences (catalogue), to take KPI alerts to its column",
        ["kpi", *PROPOSAL_LABELS],
    )
    column_of = catalogue.column_of
    for kpi in catalogue.kpis:
        k = health.kpis[kpi.id]
        for proposal_id in kpi.evidences:
            evidence.add_metric((kpi.id, column_of[proposal_id], proposal_id), 1)
        expected.add_metric((kpi.id,), k.expected_now)
        target.add_metric((kpi.id,), k.target)
        # No actual yet: no sample, rather than a zero that would read as a real value.
        if k.actual is not None:
            value.add_metric((kpi.id,), k.actual)
            off.add_metric((kpi.id,), int(k.on_track is False))
    return [value, expected, target, off, evidence]


def approval_gauge(catalogue: Catalogue, health: ProgrammeHealth, locks: Locks) -> Gauge:
    """Whether the office approved each KPI's latest actual (the board's): a pure function."""
    approved = Gauge(
        "cotn_kpi_actual_approved",
        "1 when the office approved the KPI's latest actual (cotn_kpi_value), else 0",
        ["kpi"],
    )
    for kpi in catalogue.kpis:
        k = health.kpis[kpi.id]
        flag = approval(locks, kpi.id, k.actual_period, k.event.source if k.event else None)
        if k.actual is not None and flag is not None:
            approved.add_metric((kpi.id,), int(flag))
    return approved


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


_SMALL_INTS = [floatToGoString(n) for n in range(256)]


def _value_text(value: float) -> str:
    # Counts and flags are small ints: most series of a large programme.
    if type(value) is int and 0 <= value < len(_SMALL_INTS):
        return _SMALL_INTS[value]
    return floatToGoString(value)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


MAX_CACHED_SERIES = 200_000
_series_text: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], str]] = {}
"""Family (name, label names) -> label values -> the series' text before its value. The
series of a programme recur on every scrape and are bounded by the catalogue: each one's
escaping and formatting is done once, not once per scrape."""


def _series(gauge: Gauge, labels: tuple[str, ...]) -> str:
    """``name{a="x",b="y"} ``: label names sorted, as prometheus_client sorts them."""
    if not labels:
        return gauge.name + " "
    pairs = sorted(zip(gauge.labels, labels, strict=True))
    return gauge.name + "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in pairs) + "} "


def render_gauges(gauges: list[Gauge]) -> bytes:
    """The 0.0.4 text exposition of ``gauges``, as ``generate_latest`` would write it."""
    return "".join(_header(g) + _samples(g) for g in gauges).encode()


def _header(gauge: Gauge) -> str:
    help_text = gauge.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {gauge.name} {help_text}\n# TYPE {gauge.name} gauge\n"


def _samples(gauge: Gauge) -> str:
    """``gauge``'s sample lines."""
    known = _series_text.setdefault((gauge.name, tuple(gauge.labels)), {})
    out: list[str] = []
    for labels, value in gauge.samples:
        series = known.get(labels)
        if series is None:
            series = _series(gauge, labels)
            if sum(map(len, _series_text.values())) < MAX_CACHED_SERIES:
                known[labels] = series
        out.append(f"{series}{_value_text(value)}\n")
    return "".join(out)


class GaugeEncoder:
    """The programme gauges' text (:func:`programme_gauges` and the approval gauge, as
    :func:`render_gauges` writes them) made of each proposal's sample lines kept from one
    snapshot to the next: a proposal's lines are written again only when its rating record
    changed (:func:`shared.health.rerate` keeps the records of the proposals it did not
    rate again). The KPIs' gauges, a few lines each, are written whole. A test holds the
    bytes equal to the gauges rendered whole."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._headers = [_header(g) for g in proposal_gauges()]
        self._kept: dict[str, tuple[ProposalHealth, list[str]]] = {}

    def render(self, health: ProgrammeHealth, locks: Locks) -> bytes:
        c = self._catalogue
        lines = [
            self._lines(column.id, proposal, health.proposals[proposal.id])
            for column in c.columns
            for proposal in c.proposals_of(column.id)
        ]
        out = [
            header + "".join(each[i] for each in lines) for i, header in enumerate(self._headers)
        ]
        rest = [*kpi_gauges(c, health), approval_gauge(c, health, locks)]
        return ("".join(out) + "".join(_header(g) + _samples(g) for g in rest)).encode()

    def _lines(self, column: str, proposal: Proposal, record: ProposalHealth) -> list[str]:
        kept = self._kept.get(proposal.id)
        if kept is not None and kept[0] is record:
            return kept[1]
        gauges = proposal_gauges()
        add_proposal(gauges, column, proposal, record)
        lines = [_samples(g) for g in gauges]
        self._kept[proposal.id] = (record, lines)
        return lines


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

    render_programme = GaugeEncoder(catalogue).render

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
            snapshot = await live.snapshot()
            with collector_paused():
                last_read = snapshot.text("metrics", render_programme)
            last_read += await office.text()
            operational.database_up.set(1)
        except STORE_UNAVAILABLE as exc:
            log_unreadable("/metrics", exc)
            operational.database_up.set(0)
        # 0.0.4 is what generate_latest writes and what every Prometheus version reads.
        body = generate_latest(operational.registry) + last_read
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
