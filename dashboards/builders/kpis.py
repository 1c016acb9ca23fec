"""KPIs: each KPI's latest actual against its expected value on trajectory and its target.

The KPI metrics carry only ``kpi`` (no title or unit), so panels are named by KPI id.
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
    table_panel,
    table_query,
    timeseries_panel,
)

UID = "cotn-kpis"
KPI = '{kpi="$kpi"}'


def on_trajectory() -> stat.Panel:
    return stat_panel(
        "Latest actual against trajectory",
        "Every KPI with a reported actual: on or off its trajectory (beyond tolerance).",
        [query("max by (kpi) (cotn_kpi_off_trajectory)", "{{kpi}}", instant=True)],
        width=24,
        height=5,
        mappings=flag_mappings(("on trajectory", "green"), ("off trajectory", "red")),
        background=True,
    )


def kpis_now() -> table.Panel:
    return table_panel(
        "KPIs now",
        "Latest actual, the value expected on the trajectory today, and the target.",
        [
            table_query("max by (kpi) (cotn_kpi_value)", "A"),
            table_query("max by (kpi) (cotn_kpi_expected)", "B"),
            table_query("max by (kpi) (cotn_kpi_target)", "C"),
        ],
        rename={
            "kpi": "KPI",
            "Value #A": "Actual",
            "Value #B": "Expected today",
            "Value #C": "Target",
        },
        width=24,
        merge=True,
    )


def kpi_trend() -> timeseries.Panel:
    # One panel per selected KPI: their units differ, so they cannot share an axis.
    return (
        timeseries_panel(
            "$kpi",
            "Latest actual, expected value on the trajectory, and target of the KPI.",
            [
                query(f"max(cotn_kpi_value{KPI})", "Actual", "A"),
                query(f"max(cotn_kpi_expected{KPI})", "Expected on trajectory", "B"),
                query(f"max(cotn_kpi_target{KPI})", "Target", "C"),
            ],
        )
        .repeat("kpi")
        .repeat_direction("h")
    )


def build() -> dashboard.Dashboard:
    board = base_dashboard(
        uid=UID,
        title="COTN KPIs",
        description="The programme's KPIs: actual, expected on trajectory, and target.",
        time_from="now-90d",
        variables=[label_variable("kpi", "KPI", "cotn_kpi_target", multi=True)],
    )
    return lay_out(
        board,
        [
            Row("Now", [on_trajectory(), kpis_now()]),
            Row("Trajectories", [kpi_trend()]),
        ],
    )
