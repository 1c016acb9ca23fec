"""The office board's own metrics, in a registry of its own (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class OfficeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pages = Counter(
            "cotn_office_page_requests_total",
            "Pages served, by page and HTTP status",
            ["page", "status"],
            registry=self.registry,
        )
        self.reads = Counter(
            "cotn_office_aggregator_reads_total",
            "Board reads from the aggregator's read API, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.live = Gauge(
            "cotn_office_live_connections",
            "Browsers holding a live-update stream open",
            registry=self.registry,
        )
        self.board_age = Gauge(
            "cotn_office_board_age_seconds",
            "Seconds since the board was last read successfully (absent before the first read)",
            registry=self.registry,
        )
