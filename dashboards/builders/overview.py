"""Programme overview: the RAG of every proposal, stalls, overdue milestones, delivery trend,
and who reports: events received by column and by authority (the ingest counters carry the
authority of the sending token, ``unknown`` before a token is accepted).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, timeseries

from dashboards.builders.common import (
    Row,
    base_dashboard,
    fixed_colour,
    lay_out,
    query,
    rag_mappings,
    stat_panel,
    steps,
    timeseries_panel,
    with_title,
)

UID = "cotn-overview"
PROPOSAL_RAG = "max by (column, proposal) (cotn_proposal_rag)"


def rag_counts() -> stat.Panel:
    targets = [
        query(f"sum({PROPOSAL_RAG} == bool {value})", legend, ref, instant=True)
        for value, legend, ref in ((2, "Red", "A"), (1, "Amber", "B"), (0, "Green", "C"))
    ]
    panel = stat_panel(
        "Proposals by RAG",
        "How many proposals and gamechangers are red, amber and green now.",
        targets,
        width=9,
    )
    for name, colour in (("Red", "red"), ("Amber", "orange"), ("Green", "green")):
        panel = panel.override_by_name(name, fixed_colour(colour))
    return panel


def stalled_count() -> stat.Panel:
    return stat_panel(
        "Stalled proposals",
        "Proposals with unfinished milestones and no milestone event within their stall threshold.",
        [query("sum(max by (column, proposal) (cotn_proposal_stalled))", "Stalled", instant=True)],
        width=5,
        thresholds=steps((None, "green"), (1, "red")),
    )


def overdue_count() -> stat.Panel:
    return stat_panel(
        "Overdue milestones",
        "Milestones whose due date has passed and that are not completed.",
        [
            query(
                "sum(max by (column, proposal, milestone) (cotn_milestone_overdue))",
                "Overdue",
                instant=True,
            )
        ],
        width=5,
        thresholds=steps((None, "green"), (1, "orange")),
    )


def kpis_off_count() -> stat.Panel:
    # No KPI reported yet means no off-trajectory series: show 0 rather than no data.
    return stat_panel(
        "KPIs off trajectory",
        "KPIs whose latest actual is worse than their trajectory beyond tolerance.",
        [
            query(
                "sum(max by (kpi) (cotn_kpi_off_trajectory)) or vector(0)",
                "Off trajectory",
                instant=True,
            )
        ],
        width=5,
        thresholds=steps((None, "green"), (1, "orange")),
    )


def rag_by_proposal() -> stat.Panel:
    return stat_panel(
        "RAG of every proposal",
        "Each proposal and gamechanger, coloured by its rating now.",
        [query(with_title(PROPOSAL_RAG), "{{proposal}} {{title}}", instant=True)],
        width=24,
        height=7,
        mappings=rag_mappings(),
        thresholds=steps((None, "green"), (1, "orange"), (2, "red")),
        background=True,
    )


def milestones_against_plan() -> timeseries.Panel:
    completed = 'max by (column, proposal, status) (cotn_milestones{status="completed"})'
    return timeseries_panel(
        "Milestones completed against planned",
        "All planned milestones, those completed, and those due but not completed. (No "
        "metric gives the milestones due by a date, so the overdue line stands for the gap "
        "to plan.)",
        [
            query("sum(max by (column, proposal, status) (cotn_milestones))", "Planned", "A"),
            query(f"sum({completed}) or vector(0)", "Completed", "B"),
            query(
                "sum(max by (column, proposal, milestone) (cotn_milestone_overdue))",
                "Overdue",
                "C",
            ),
        ],
    )


def rag_over_time() -> timeseries.Panel:
    panel = timeseries_panel(
        "Proposals by RAG over time",
        "How many proposals were red, amber and green.",
        [
            query(f"sum({PROPOSAL_RAG} == bool {value})", legend, ref)
            for value, legend, ref in ((2, "Red", "A"), (1, "Amber", "B"), (0, "Green", "C"))
        ],
        stacked=True,
    )
    for name, colour in (("Red", "red"), ("Amber", "orange"), ("Green", "green")):
        panel = panel.override_by_name(name, fixed_colour(colour))
    return panel


def events_by_column() -> timeseries.Panel:
    return timeseries_panel(
        "Events received per hour, by column and outcome",
        "Events the column services received in the hour before each point: accepted, "
        "duplicate (a resend) or rejected.",
        [
            query(
                "sum by (column, outcome) (increase(cotn_ingest_events_total[1h]))",
                "{{column}} {{outcome}}",
            )
        ],
        unit="short",
        width=8,
    )


def events_by_authority() -> timeseries.Panel:
    return timeseries_panel(
        "Events received per hour, by authority and outcome",
        "Events each authority's systems sent in the hour before each point, by the authority "
        "of the token they used: accepted, duplicate or rejected. A rejected line that keeps "
        "rising is what the AuthorityEventsRejected alert is about.",
        [
            query(
                "sum by (authority, outcome) (increase(cotn_ingest_events_total[1h]))",
                "{{authority}} {{outcome}}",
            )
        ],
        unit="short",
        width=8,
    )


def events_stored() -> timeseries.Panel:
    return timeseries_panel(
        "Events stored per hour, by type",
        "Events the aggregator stored for the first time in the hour before each point.",
        [
            query(
                "sum by (type) (increase(cotn_events_persisted_total[1h]))",
                "{{type}}",
            )
        ],
        width=8,
    )


def build() -> dashboard.Dashboard:
    board = base_dashboard(
        uid=UID,
        title="COTN programme overview",
        description="The whole delivery programme at a glance: ratings, stalls, overdue "
        "milestones and the delivery trend.",
        time_from="now-30d",
    )
    return lay_out(
        board,
        [
            Row(
                "Programme now", [rag_counts(), stalled_count(), overdue_count(), kpis_off_count()]
            ),
            Row("Proposals", [rag_by_proposal()]),
            Row("Delivery over time", [milestones_against_plan(), rag_over_time()]),
            Row("Reporting", [events_by_column(), events_by_authority(), events_stored()]),
        ],
    )
