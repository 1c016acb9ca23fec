"""Prometheus metrics of a column service, in a registry of its own (CONTRACT §6)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.ingest.problems import REASONS
from shared.events import EVENT_TYPES

OUTCOMES = ("accepted", "duplicate", "rejected")
UNKNOWN_TYPE = "unknown"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """Counters and the latency histogram, labelled with this service's column."""

    def __init__(self, column: str, registry: CollectorRegistry | None = None) -> None:
        self.column = column
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "cotn_ingest_events",
            "Events received, by outcome: accepted, duplicate or rejected",
            ["column", "type", "outcome"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "cotn_ingest_rejections",
            "Requests refused, by reason",
            ["column", "reason"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "cotn_ingest_request_duration_seconds",
            "Time to answer POST /v1/events",
            ["column"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Every series exists from the start, so rates and alerts see a 0, not no data.
        for event_type in EVENT_TYPES:
            for outcome in OUTCOMES:
                self.events.labels(column, event_type, outcome)
        self.events.labels(column, UNKNOWN_TYPE, "rejected")
        for reason in REASONS:
            self.rejections.labels(column, reason)
        self.request_duration.labels(column)

    def count_events(self, event_type: str, outcome: str, n: int = 1) -> None:
        self.events.labels(self.column, event_type, outcome).inc(n)

    def count_rejection(self, reason: str) -> None:
        self.rejections.labels(self.column, reason).inc()

    def observe_request(self, seconds: float) -> None:
        self.request_duration.labels(self.column).observe(seconds)
