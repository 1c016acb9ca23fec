"""Prometheus metrics of a column service, in a registry of its own (CONTRACT §6).

The event and refusal counters carry the ``authority`` of the token a request came with
(``unknown`` before a token is accepted), so an alert can say whose events keep being
refused. Its values are bounded: the catalogue's authorities, which are all a token can
be issued to, and ``office`` for any office token (refused: the office sends no events; that
series appears with its first refusal).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.ingest.problems import REASONS
from shared.kinds import KINDS

OUTCOMES = ("accepted", "duplicate", "rejected")
UNKNOWN_TYPE = "unknown"
UNKNOWN_AUTHORITY = "unknown"
OFFICE_AUTHORITY = "office"
UNAUTHENTICATED = "unauthenticated"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """Counters and the latency histogram, labelled with this service's column."""

    def __init__(
        self,
        column: str,
        registry: CollectorRegistry | None = None,
        *,
        authorities: Iterable[str] = (),
    ) -> None:
        self.column = column
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "cotn_ingest_events",
            "Events received, by sending authority and outcome: accepted, duplicate or rejected",
            ["column", "authority", "type", "outcome"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "cotn_ingest_rejections",
            "Requests refused, by sending authority and reason",
            ["column", "authority", "reason"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "cotn_ingest_request_duration_seconds",
            "Time to answer POST /v1/events",
            ["column"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._create_series(list(authorities))
        self.request_duration.labels(column)

    def _create_series(self, authorities: list[str]) -> None:
        # Every series exists from the start, so rates and alerts see a 0, not no data.
        column = self.column
        for authority in authorities:
            for event_type in KINDS.types:
                for outcome in OUTCOMES:
                    self.events.labels(column, authority, event_type, outcome)
            self.events.labels(column, authority, UNKNOWN_TYPE, "rejected")
            for reason in REASONS:
                if reason != UNAUTHENTICATED:
                    self.rejections.labels(column, authority, reason)
        # Without an accepted token the body is never read: the only refusal is the token.
        self.rejections.labels(column, UNKNOWN_AUTHORITY, UNAUTHENTICATED)

    def count_events(self, authority: str, event_type: str, outcome: str, n: int = 1) -> None:
        self.events.labels(self.column, authority, event_type, outcome).inc(n)

    def count_rejection(self, authority: str, reason: str) -> None:
        self.rejections.labels(self.column, authority, reason).inc()

    def observe_request(self, seconds: float) -> None:
        self.request_duration.labels(self.column).observe(seconds)
