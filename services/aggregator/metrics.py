"""``/metrics``: the operational registry plus programme gauges read from stored state.

Programme metrics are never kept in process memory: each scrape loads the stored state,
rates it (the same :func:`~services.aggregator.board.programme_view` as ``/v1/programme``)
and renders it through a collector in a registry of its own, so a restart or a second
replica exports the same values (CONTRACT §6). prometheus_client collectors are
synchronous, hence the order: load asynchronously first, then render.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.aggregator.api import Clock, read_health
from services.aggregator.board import ProgrammeOut, programme_view, rag_value
from shared.catalogue import Catalogue

PROPOSAL_LABELS = ["column", "proposal"]


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def programme_families(board: ProgrammeOut) -> list[GaugeMetricFamily]:
    """Every programme gauge for one board snapshot (a pure function, tested on its own)."""
    rag = _gauge("cotn_proposal_rag", "Proposal RAG: 0 green, 1 amber, 2 red", PROPOSAL_LABELS)
    stalled = _gauge(
        "cotn_proposal_stalled",
        "1 when the proposal has unfinished milestones and no milestone event within its "
        "stall threshold",
        PROPOSAL_LABELS,
    )
    last_progress = _gauge(
        "cotn_proposal_last_progress_timestamp_seconds",
        "Event time of the proposal's newest milestone event, or the programme start before "
        "any; stalled when time() - this > cotn_proposal_stall_threshold_seconds",
        PROPOSAL_LABELS,
    )
    threshold = _gauge(
        "cotn_proposal_stall_threshold_seconds",
        "Seconds without a milestone event after which the proposal is stalled (catalogue)",
        PROPOSAL_LABELS,
    )
    unfinished = _gauge(
        "cotn_proposal_unfinished_milestones",
        "Milestones of the proposal not yet completed",
        PROPOSAL_LABELS,
    )
    milestones = _gauge(
        "cotn_milestones", "Milestones of the proposal in each status", [*PROPOSAL_LABELS, "status"]
    )
    overdue = _gauge(
        "cotn_milestone_overdue",
        "1 when the milestone's due date has passed and it is not completed",
        [*PROPOSAL_LABELS, "milestone"],
    )
    info = _gauge(
        "cotn_proposal_info",
        "Always 1: the proposal's title and kind, to join onto other proposal metrics",
        [*PROPOSAL_LABELS, "title", "kind"],
    )
    for column in board.columns:
        for p in column.proposals:
            labels = [column.id, p.id]
            rag.add_metric(labels, rag_value(p.rag))
            stalled.add_metric(labels, int(p.stalled))
            last_progress.add_metric(labels, p.last_progress.timestamp())
            threshold.add_metric(labels, p.stall_threshold_seconds)
            unfinished.add_metric(labels, p.unfinished_milestones)
            for status, count in p.milestone_counts.items():
                milestones.add_metric([*labels, status], count)
            for m in p.milestones:
                overdue.add_metric([*labels, m.id], int(m.overdue))
            info.add_metric([*labels, p.title, p.kind], 1)

    value = _gauge("cotn_kpi_value", "The KPI's latest reported actual", ["kpi"])
    expected = _gauge("cotn_kpi_expected", "The KPI's trajectory value now", ["kpi"])
    target = _gauge("cotn_kpi_target", "The KPI's target value", ["kpi"])
    off = _gauge(
        "cotn_kpi_off_trajectory",
        "1 when the latest actual is worse than its trajectory beyond the KPI's tolerance",
        ["kpi"],
    )
    for k in board.kpis:
        expected.add_metric([k.id], k.expected)
        target.add_metric([k.id], k.target.value)
        # No actual yet: no sample, rather than a zero that would read as a real value.
        if k.actual is not None:
            value.add_metric([k.id], k.actual)
            off.add_metric([k.id], int(k.on_track is False))
    return [
        rag,
        stalled,
        last_progress,
        threshold,
        unfinished,
        milestones,
        overdue,
        info,
        value,
        expected,
        target,
        off,
    ]


class ProgrammeCollector(Collector):
    """Yields the programme gauges of one board snapshot taken before the scrape renders."""

    def __init__(self, board: ProgrammeOut) -> None:
        self._board = board

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from programme_families(self._board)


def render_metrics(registry: CollectorRegistry, board: ProgrammeOut) -> bytes:
    """The operational registry's exposition followed by the programme gauges."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(ProgrammeCollector(board))
    return generate_latest(registry) + generate_latest(scrape)


def build_metrics_router(
    *,
    catalogue: Catalogue,
    sessions: async_sessionmaker,
    clock: Clock,
    registry: CollectorRegistry,
) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format."""
    router = APIRouter()

    @router.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics: operations and programme state",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}}},
    )
    async def metrics() -> Response:
        health = await read_health(catalogue=catalogue, sessions=sessions, clock=clock)
        body = render_metrics(registry, programme_view(catalogue, health))
        # 0.0.4 is what generate_latest writes and what every Prometheus version reads.
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
