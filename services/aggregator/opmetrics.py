"""The aggregator's operational metrics, in the registry the app passes to ``/metrics``.

Programme metrics come from stored state (``metrics.py``); these count what this process
did, so each replica reports its own share.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.kinds import KINDS

CONSUMER_REASONS = ("invalid_json", "invalid_event", "unknown_type", "bad_subject",
                    "unknown_proposal", "unstorable")  # fmt: skip
"""Dead-letter reasons of the consumer itself; each kind adds those of its checks."""


def dead_letter_reasons() -> list[str]:
    """Every reason a message may be dead-lettered for, with the registered kinds'."""
    reasons = dict.fromkeys(CONSUMER_REASONS)
    for kind in KINDS:
        reasons.update(dict.fromkeys(kind.codes))
    return list(reasons)


class Reading(Collector):
    """A gauge that is absent while its source cannot be read, rather than repeating a
    value that may no longer be true: Prometheus then marks the series stale."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        """The source answered ``value``."""
        self.value = value

    def clear(self) -> None:
        """The source could not be read: no sample until it can again."""
        self.value = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation)
        if self.value is not None:
            family.add_metric([], self.value)
        yield family


BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperationalMetrics:
    """Counters of stored events, conflicts and dead letters; the backlog (absent while
    unknown); batch timing; whether ``/metrics`` could read the database."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.persisted = Counter(
            "cotn_events_persisted",
            "Events stored for the first time, by CloudEvents type",
            ["type"],
            registry=registry,
        )
        self.duplicates = Counter(
            "cotn_event_duplicates",
            "Messages whose event was already stored with the same payload (redeliveries, resends)",
            registry=registry,
        )
        self.conflicts = Counter(
            "cotn_event_conflicts",
            "Events whose (source, id) was already stored with a different payload",
            registry=registry,
        )
        self.dead_letters = Counter(
            "cotn_dead_letters",
            "Messages that can never be stored, by reason (kept in dead_letter, sent to cotn.dlq)",
            ["reason"],
            registry=registry,
        )
        self.backlog = Reading(
            "cotn_consumer_backlog",
            "Messages of the events stream not yet delivered to the aggregator's consumer; "
            "absent while NATS cannot say (see cotn_consumer_backlog_up)",
            registry=registry,
        )
        self.backlog_up = Gauge(
            "cotn_consumer_backlog_up",
            "1 when the last reading of the consumer's backlog succeeded; 0 while NATS "
            "cannot be asked (cotn_consumer_backlog is then absent)",
            registry=registry,
        )
        self.database_up = Gauge(
            "cotn_aggregator_database_up",
            "1 when the last scrape read the stored state; 0 when the database could not "
            "answer (the programme gauges then repeat the last read)",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "cotn_consumer_batch_seconds",
            "Time to store one batch and acknowledge it",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        # Every series exists from the start, so rates and alerts see a 0, not no data.
        for event_type in KINDS.types:
            self.persisted.labels(event_type)
        for reason in dead_letter_reasons():
            self.dead_letters.labels(reason)
