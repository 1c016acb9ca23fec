"""Reporting: who owes which return, what came in on time, late or not at all, and the
office's review queue.

A **silent reporter** (an authority owes a return and nothing arrived) is shown apart from
the delivery boards' stalled proposals (reports arrive, no milestone moves) and overdue
milestones (a planned date passed). The returns metrics carry ``authority`` and ``column``;
the review queue carries ``column`` only, and KPI approvals ``kpi`` only,
so each panel filters by the variables its metric has.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries

from dashboards.builders.common import (
    Row,
    base_dashboard,
    flag_mappings,
    label_variable,
    lay_out,
    query,
    stat_panel,
    steps,
    table_panel,
    table_query,
    timeseries_panel,
)

UID = "cotn-reporting"
COLUMN = 'column=~"$column"'
RETURNS = f'{COLUMN}, authority=~"$authority"'
STATES = (
    ("on_time", "On time"),
    ("late", "Late"),
    ("missing", "Missing"),
    ("pending", "Pending"),
    ("extra", "Extra"),
)
"""The states of ``cotn_reporting_returns``, in the table's order, with their column names."""
RATIO_STEPS = ((None, "red"), (0.8, "orange"), (0.95, "green"))


def returns_of(selector: str) -> str:
    """Returns owed by authority and period (columns summed; a second replica counted once)."""
    return (
        "sum by (authority, period) (max by (authority, column, period) "
        f"(cotn_reporting_returns{{{RETURNS}, {selector}}}))"
    )


def returns_table() -> table.Panel:
    states = [
        table_query(returns_of(f'state="{s}"'), chr(ord("A") + i))
        for i, (s, _) in enumerate(STATES)
    ]
    expected = chr(ord("A") + len(STATES))
    return table_panel(
        "Returns by authority and period",
        "Every period that has started: expected (on time + late + missing + pending), how "
        "many came in on time or late, are missing (past due, nothing received) or pending "
        "(not yet due). Extra returns were received but not owed and are not in expected.",
        [*states, table_query(returns_of('state!="extra"'), expected)],
        rename={
            "authority": "Authority",
            "period": "Period",
            f"Value #{expected}": "Expected",
            **{f"Value #{chr(ord('A') + i)}": name for i, (_, name) in enumerate(STATES)},
        },
        width=24,
        height=10,
        merge=True,
    )


def returns_by_state() -> timeseries.Panel:
    return timeseries_panel(
        "Returns owed, by state",
        "All the selected authorities' returns of every started period, by state, over time.",
        [
            query(
                "sum by (state) (max by (authority, column, period, state) "
                f'(cotn_reporting_returns{{{RETURNS}, state!="extra"}}))',
                "{{state}}",
            )
        ],
        width=24,
        stacked=True,
    )


def ratio(metric: str, title: str, description: str) -> timeseries.Panel:
    return (
        timeseries_panel(
            title,
            description,
            [
                query(
                    f"max by (authority, column) ({metric}{{{RETURNS}}})",
                    "{{authority}} ({{column}})",
                )
            ],
            unit="percentunit",
        )
        .min(0)
        .max(1)
        .thresholds(steps(*RATIO_STEPS))
    )


def completeness() -> timeseries.Panel:
    return ratio(
        "cotn_reporting_completeness_ratio",
        "Completeness by authority",
        "Returns received (on time or late) out of those due, over the periods whose due "
        "date has passed. No line until a return is due.",
    )


def timeliness() -> timeseries.Panel:
    return ratio(
        "cotn_reporting_timeliness_ratio",
        "Timeliness by authority",
        "Returns received by their due day out of those due (judged by when they were "
        "received, not by the time the sender wrote). No line until a return is due.",
    )


SILENT = f"max by (authority, column, obligation, kind) (cotn_reporter_silent{{{RETURNS}}})"


def silent_count() -> stat.Panel:
    return stat_panel(
        "Silent now",
        "Obligations whose latest due return is past due with nothing received.",
        [query(f"count({SILENT}) or vector(0)", "Silent", instant=True)],
        width=4,
        height=8,
        thresholds=steps((None, "green"), (1, "red")),
    )


def silent_table() -> table.Panel:
    return table_panel(
        "Silent reporters",
        "Each authority owing a return it has not sent (the ReporterSilent alert): a KPI "
        "actual (kind kpi, obligation the KPI) or a progress update (kind update, obligation "
        "the proposal). Not a stalled proposal (reports arrive, no milestone moves) nor an "
        "overdue milestone (a planned date passed): those are on the column board.",
        [table_query(SILENT)],
        rename={
            "authority": "Authority",
            "column": "Column",
            "kind": "Kind",
            "obligation": "Obligation",
            "Value": "State",
        },
        width=20,
        mappings=flag_mappings(("reported", "green"), ("silent", "red")),
    )


def queue(metric: str, title: str, description: str) -> stat.Panel:
    # The queue may be empty (no series): show 0 rather than no data.
    return stat_panel(
        title,
        description,
        [
            query(
                f'sum(max by (column, kind) ({metric}{{{COLUMN}, kind="{kind}"}})) or vector(0)',
                legend,
                ref,
                instant=True,
            )
            for kind, legend, ref in (("kpi", "KPI returns", "A"), ("milestone", "Milestones", "B"))
        ],
        width=8,
    )


def waiting() -> stat.Panel:
    return queue(
        "cotn_reviews_waiting",
        "Waiting for review",
        "Returns submitted and waiting for the office's review: KPI actuals to approve, "
        "milestone completions to verify.",
    )


def returned() -> stat.Panel:
    return queue(
        "cotn_reviews_returned",
        "Returned for correction",
        "Returns the office sent back for correction that have not been resubmitted.",
    )


def kept_aside() -> stat.Panel:
    return stat_panel(
        "Events kept aside",
        "Events accepted before a lock reached the column service: stored, never applied "
        "(the return they belong to was approved or verified first).",
        [
            query(
                f"sum(max by (column) (cotn_events_kept_aside{{{COLUMN}}})) or vector(0)",
                "Kept aside",
                instant=True,
            )
        ],
        width=8,
        thresholds=steps((None, "text"), (1, "orange")),
    )


def approved_share() -> stat.Panel:
    return stat_panel(
        "Approved share of KPI returns",
        "Of each KPI's returns received (every period and reporter), the share the office has "
        "approved. KPI returns carry no column.",
        [
            query(
                'sum by (kpi) (max by (kpi, state) (cotn_kpi_returns{state="approved"})) '
                "/ sum by (kpi) (max by (kpi, state) (cotn_kpi_returns))",
                "{{kpi}}",
                instant=True,
            )
        ],
        unit="percentunit",
        width=12,
        thresholds=steps((None, "orange"), (1, "green")),
    )


def actual_approved() -> stat.Panel:
    return stat_panel(
        "Latest actual approved",
        "1 where the office has approved the KPI's latest actual (the value on the board), "
        "0 where it has not yet.",
        [query("max by (kpi) (cotn_kpi_actual_approved)", "{{kpi}}", instant=True)],
        width=12,
        thresholds=steps((None, "orange"), (1, "green")),
    )


def build() -> dashboard.Dashboard:
    board = base_dashboard(
        uid=UID,
        title="COTN reporting",
        description="Reporting obligations: completeness and timeliness of each authority's "
        "returns, silent reporters, and the office's review queue.",
        time_from="now-90d",
        variables=[
            label_variable("column", "Column", "cotn_reporting_returns", multi=True),
            label_variable(
                "authority",
                "Authority",
                'cotn_reporting_returns{column=~"$column"}',
                multi=True,
            ),
        ],
        annotation_selector=f"{{{COLUMN}}}",
    )
    return lay_out(
        board,
        [
            Row("Returns", [returns_table(), returns_by_state()]),
            Row("Completeness and timeliness", [completeness(), timeliness()]),
            Row("Silent reporters", [silent_count(), silent_table()]),
            Row("Review", [waiting(), returned(), kept_aside()]),
            Row("KPI approvals", [approved_share(), actual_approved()]),
        ],
    )
