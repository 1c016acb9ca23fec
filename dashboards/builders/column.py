"""Column board: one dashboard for every delivery column, chosen with the ``column`` variable."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries

from dashboards.builders.common import (
    Row,
    base_dashboard,
    flag_mappings,
    label_variable,
    lay_out,
    query,
    rag_mappings,
    stat_panel,
    steps,
    table_panel,
    table_query,
    timeseries_panel,
    with_title,
)

UID = "cotn-column"
COLUMN = '{column="$column"}'


def service_up() -> stat.Panel:
    return stat_panel(
        "Column service",
        "Whether Prometheus can scrape the column's service (authorities post to it).",
        [query('max(up{job="cotn-ingest", column="$column"})', "Service", instant=True)],
        width=4,
        height=6,
        mappings=flag_mappings(("down", "red"), ("up", "green")),
        background=True,
    )


def rag() -> stat.Panel:
    return stat_panel(
        "RAG",
        "Each proposal and gamechanger of the column, coloured by its rating now.",
        [
            query(
                with_title(f"max by (column, proposal) (cotn_proposal_rag{COLUMN})", COLUMN),
                "{{proposal}} {{title}}",
                instant=True,
            )
        ],
        width=14,
        height=6,
        mappings=rag_mappings(),
        thresholds=steps((None, "green"), (1, "orange"), (2, "red")),
        background=True,
    )


def stalled() -> stat.Panel:
    return stat_panel(
        "Stalled",
        "Whether each proposal has gone without a milestone event beyond its threshold.",
        [
            query(
                f"max by (proposal) (cotn_proposal_stalled{COLUMN})",
                "{{proposal}}",
                instant=True,
            )
        ],
        width=6,
        height=6,
        mappings=flag_mappings(("moving", "green"), ("stalled", "red")),
    )


def quiet_against_threshold() -> timeseries.Panel:
    return timeseries_panel(
        "Time since the last milestone event, against the stall threshold",
        "A proposal stalls when its line crosses its threshold (with unfinished milestones).",
        [
            query(
                "time() - max by (proposal) "
                f"(cotn_proposal_last_progress_timestamp_seconds{COLUMN})",
                "{{proposal}} since last event",
                "A",
            ),
            query(
                f"max by (proposal) (cotn_proposal_stall_threshold_seconds{COLUMN})",
                "{{proposal}} threshold",
                "B",
            ),
        ],
        unit="s",
        width=24,
    )


def milestones_by_status() -> table.Panel:
    return table_panel(
        "Milestones by status",
        "How many of each proposal's milestones are in each status.",
        [table_query(f"max by (proposal, status) (cotn_milestones{COLUMN})")],
        rename={"proposal": "Proposal", "status": "Status", "Value": "Milestones"},
    )


def overdue_milestones() -> table.Panel:
    return table_panel(
        "Milestones overdue",
        "Every milestone of the column: overdue when its due date has passed and it is not "
        "completed.",
        [table_query(f"max by (proposal, milestone) (cotn_milestone_overdue{COLUMN})")],
        rename={"proposal": "Proposal", "milestone": "Milestone", "Value": "Overdue"},
        mappings=flag_mappings(("on time", "green"), ("overdue", "red")),
    )


def events_received() -> timeseries.Panel:
    return timeseries_panel(
        "Events received by the column service",
        "Events per second by type and outcome.",
        [
            query(
                "sum by (type, outcome) "
                f"(rate(cotn_ingest_events_total{COLUMN}[$__rate_interval]))",
                "{{type}} {{outcome}}",
            )
        ],
        unit="reqps",
    )


def refusals() -> timeseries.Panel:
    return timeseries_panel(
        "Requests refused, by authority and reason",
        "Refused requests per second, by the authority of the token (unknown: no valid "
        "token); see the runbook's AuthorityEventsRejected section.",
        [
            query(
                "sum by (authority, reason) "
                f"(rate(cotn_ingest_rejections_total{COLUMN}[$__rate_interval]))",
                "{{authority}}: {{reason}}",
            )
        ],
        unit="reqps",
    )


def build() -> dashboard.Dashboard:
    board = base_dashboard(
        uid=UID,
        title="COTN column board",
        description="One delivery column: its proposals' ratings, milestones and stall "
        "clocks, and the health of its column service.",
        time_from="now-7d",
        variables=[label_variable("column", "Column", "cotn_proposal_info")],
        annotation_selector=COLUMN,
    )
    return lay_out(
        board,
        [
            Row("Proposals of $column", [service_up(), rag(), stalled()]),
            Row("Progress", [quiet_against_threshold()]),
            Row("Milestones", [milestones_by_status(), overdue_milestones()]),
            Row("Reporting", [events_received(), refusals()]),
        ],
    )
