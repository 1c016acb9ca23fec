"""Shared defaults of the COTN dashboards: data source, variables, panel shapes, layout.

Every dashboard reads Prometheus through the ``datasource`` variable (its default is the
data source Grafana's provisioning creates with uid :data:`DATASOURCE_UID`), carries the
milestone-completion annotation, links to the other COTN dashboards and numbers its
panels in order, so the generated JSON is stable from one build to the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE_UID = "cotn-prometheus"
"""The uid deploy/grafana/provisioning/datasources/prometheus.yml gives the data source."""
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")
TAGS = ["cotn"]
GRID_WIDTH = 24

TITLE_JOIN = (
    "* on (column, proposal) group_left (title) "
    "max by (column, proposal, title) (cotn_proposal_info{selector})"
)
"""Appended to a per-proposal expression to carry the proposal's title (``selector`` filters
the info series, e.g. by column). ``max by`` keeps the join one-to-one when a second
aggregator replica exports the same series."""

RAG_COLOURS = (("0", "Green", "green"), ("1", "Amber", "orange"), ("2", "Red", "red"))


def with_title(expr: str, selector: str = "") -> str:
    """``expr`` (labelled by column and proposal) joined with the proposal's title."""
    return f"{expr} {TITLE_JOIN.format(selector=selector)}"


# -- queries and variables --------------------------------------------------------------------


def query(
    expr: str, legend: str = "__auto", ref_id: str = "A", *, instant: bool = False
) -> prometheus.Dataquery:
    """A Prometheus query; ``instant`` for panels that show the value now."""
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id)
    return q.instant() if instant else q.range()


def table_query(expr: str, ref_id: str = "A") -> prometheus.Dataquery:
    """An instant query in table format: one row per series, one column per label."""
    return query(expr, ref_id=ref_id, instant=True).format(PromQueryFormat.TABLE)


def datasource_variable() -> dashboard.DatasourceVariable:
    return (
        dashboard.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Data source")
        .type("prometheus")
        .current(models.VariableOption(text="Prometheus", value=DATASOURCE_UID))
    )


def label_variable(
    name: str, label: str, metric: str, *, multi: bool = False
) -> dashboard.QueryVariable:
    """A variable listing the values of label ``name`` on ``metric``."""
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        every = models.VariableOption(text=["All"], value=["$__all"])
        variable = variable.multi(True).include_all(True).current(every)
    return variable


def milestone_annotation(selector: str = "") -> dashboard.AnnotationQuery:
    """Marks when a proposal's unfinished-milestone count fell: a milestone was completed.

    The unfinished count exists for every proposal from the start, so the first completion
    shows too (a completed-status series only appears with its first milestone).
    """
    expr = (
        f"max by (column, proposal) (-delta(cotn_proposal_unfinished_milestones{selector}[5m])) > 0"
    )
    return (
        dashboard.AnnotationQuery()
        .name("Milestones completed")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("green")
        .expr(expr)
    )


# -- panels -----------------------------------------------------------------------------------


def rag_mappings() -> list[models.ValueMapping]:
    """0, 1, 2 shown as Green, Amber, Red in their colours."""
    options = {
        value: models.ValueMappingResult(text=text, color=colour, index=i)
        for i, (value, text, colour) in enumerate(RAG_COLOURS)
    }
    return [models.ValueMap(options=options)]


def flag_mappings(off: tuple[str, str], on: tuple[str, str]) -> list[models.ValueMapping]:
    """0 and 1 shown as words in colours, e.g. ("on time", "green"), ("overdue", "red")."""
    options = {
        "0": models.ValueMappingResult(text=off[0], color=off[1], index=0),
        "1": models.ValueMappingResult(text=on[0], color=on[1], index=1),
    }
    return [models.ValueMap(options=options)]


def steps(*pairs: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds from (value, colour) pairs; the first value is None (the base)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in pairs])
    )


def fixed_colour(colour: str) -> list[models.DynamicConfigValue]:
    return [
        models.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})
    ]


def _legend(placement: common_models.LegendPlacement) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(placement)
        .show_legend(True)
    )


def timeseries_panel(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series with its legend below; ``stacked`` for parts of a whole."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .legend(_legend(common_models.LegendPlacement.BOTTOM))
    )
    if stacked:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)
        )
    return panel


def stat_panel(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str = "short",
    width: int = 6,
    height: int = 4,
    mappings: list[models.ValueMapping] | None = None,
    thresholds: dashboard.ThresholdsConfig | None = None,
    background: bool = False,
) -> stat.Panel:
    """The latest value of each series, coloured by its mapping or thresholds."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(width)
        .height(height)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
        .justify_mode(common_models.BigValueJustifyMode.AUTO)
        .orientation(common_models.VizOrientation.AUTO)
        .color_mode(
            common_models.BigValueColorMode.BACKGROUND
            if background
            else common_models.BigValueColorMode.VALUE
        )
        .thresholds(thresholds or steps((None, "text")))
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def table_panel(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    rename: dict[str, str],
    width: int = 12,
    height: int = 8,
    mappings: list[models.ValueMapping] | None = None,
    merge: bool = False,
) -> table.Panel:
    """Instant table queries as one table: ``rename`` names the columns worth showing."""
    transformations = []
    if merge:
        transformations.append(models.DataTransformerConfig(id_val="merge", options={}))
    transformations.append(
        models.DataTransformerConfig(
            id_val="organize",
            options={"excludeByName": {"Time": True}, "renameByName": rename},
        )
    )
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .span(width)
        .height(height)
        .show_header(True)
        .cell_height(common_models.TableCellHeight.SM)
        .transformations(transformations)
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


# -- dashboards -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A titled row of panels, laid out left to right and wrapped at the grid's width."""

    title: str
    panels: Sequence[Builder[models.Panel]]


def base_dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    time_from: str,
    variables: Sequence[Builder[models.VariableModel]] = (),
    annotation_selector: str = "",
) -> dashboard.Dashboard:
    """A COTN dashboard without panels: uid, tags, time, variables, annotations, links."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("utc")
        .time(time_from, "now")
        .refresh("1m")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .annotation(milestone_annotation(annotation_selector))
        .link(
            dashboard.DashboardLink("COTN dashboards")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
    )
    for variable in variables:
        board = board.with_variable(variable)
    return board


def lay_out(board: dashboard.Dashboard, rows: Sequence[Row]) -> dashboard.Dashboard:
    """Add ``rows`` and their panels, numbering every panel in order (stable ids)."""
    panel_id = 0
    for row in rows:
        panel_id += 1
        board = board.with_row(dashboard.Row(row.title).id(panel_id))
        for panel in row.panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))  # type: ignore[attr-defined]
    return board
