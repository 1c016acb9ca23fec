"""Operations: the monitor itself: ingest rate, refusals, latency, backlog, dead letters."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries

from dashboards.builders.common import (
    Row,
    base_dashboard,
    flag_mappings,
    lay_out,
    query,
    stat_panel,
    timeseries_panel,
)

UID = "cotn-operations"
RATE = "[$__rate_interval]"


def _quantiles(metric: str) -> list[prometheus.Dataquery]:
    """p50 and p99 of a histogram over every instance."""
    return [
        query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{RATE})))",
            f"p{round(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.99, "B"))
    ]


def services_up() -> stat.Panel:
    return stat_panel(
        "Services",
        "Whether Prometheus can scrape each COTN service, and whether the aggregator can "
        "read its database.",
        [
            query('up{job=~"cotn-.+"}', "{{job}} {{column}}", "A", instant=True),
            query("cotn_aggregator_database_up", "database of {{instance}}", "B", instant=True),
        ],
        width=24,
        height=4,
        mappings=flag_mappings(("down", "red"), ("up", "green")),
        background=True,
    )


def ingest_by_outcome() -> timeseries.Panel:
    return timeseries_panel(
        "Ingest rate by outcome",
        "Events per second received by the column services: accepted, duplicate, rejected.",
        [
            query(
                f"sum by (outcome) (rate(cotn_ingest_events_total{RATE}))",
                "{{outcome}}",
            )
        ],
        unit="reqps",
        width=8,
    )


def ingest_by_column() -> timeseries.Panel:
    return timeseries_panel(
        "Ingest rate by column",
        "Events per second received by each column service.",
        [query(f"sum by (column) (rate(cotn_ingest_events_total{RATE}))", "{{column}}")],
        unit="reqps",
        width=8,
    )


def refusals() -> timeseries.Panel:
    return timeseries_panel(
        "Requests refused, by reason",
        "Refused requests per second, by column service and reason.",
        [
            query(
                f"sum by (column, reason) (rate(cotn_ingest_rejections_total{RATE}))",
                "{{column}} {{reason}}",
            )
        ],
        unit="reqps",
        width=8,
    )


def request_latency() -> timeseries.Panel:
    return timeseries_panel(
        "POST /v1/events latency",
        "Time to answer an event request (up to the JetStream acknowledgement), p50 and p99.",
        _quantiles("cotn_ingest_request_duration_seconds"),
        unit="s",
    )


def batch_time() -> timeseries.Panel:
    return timeseries_panel(
        "Aggregator batch time",
        "Time to store one batch and acknowledge it, p50 and p99.",
        _quantiles("cotn_consumer_batch_seconds"),
        unit="s",
    )


def backlog() -> timeseries.Panel:
    return timeseries_panel(
        "Aggregator backlog",
        "Messages of the events stream not yet delivered to the aggregator's consumer.",
        [query("sum by (instance) (cotn_consumer_backlog)", "{{instance}}")],
        width=8,
    )


def stored() -> timeseries.Panel:
    return timeseries_panel(
        "Events stored, duplicates and conflicts",
        "Per second: events stored for the first time by type, redeliveries and resends "
        "already stored, and ids resent with a different payload.",
        [
            query(f"sum by (type) (rate(cotn_events_persisted_total{RATE}))", "{{type}}", "A"),
            query(f"sum(rate(cotn_event_duplicates_total{RATE}))", "duplicates", "B"),
            query(f"sum(rate(cotn_event_conflicts_total{RATE}))", "conflicts", "C"),
        ],
        unit="reqps",
        width=8,
    )


def dead_letters() -> timeseries.Panel:
    return timeseries_panel(
        "Dead letters",
        "Messages the aggregator could never store, by reason (see the runbook).",
        [
            query(
                f"sum by (reason) (increase(cotn_dead_letters_total{RATE}))",
                "{{reason}}",
            )
        ],
        width=8,
    )


def build() -> dashboard.Dashboard:
    board = base_dashboard(
        uid=UID,
        title="COTN operations",
        description="The delivery monitor itself: column services, aggregator and bus.",
        time_from="now-6h",
    )
    return lay_out(
        board,
        [
            Row("Services", [services_up()]),
            Row("Column services", [ingest_by_outcome(), ingest_by_column(), refusals()]),
            Row("Latency", [request_latency(), batch_time()]),
            Row("Aggregator", [backlog(), stored(), dead_letters()]),
        ],
    )
