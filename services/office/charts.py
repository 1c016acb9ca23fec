"""KPI charts: pygal, rendered on the server as inline SVG with a title and a description.

pygal's default config links its tooltip script from a CDN; ``js=[]`` keeps every chart
self-contained, so no page fetches anything from elsewhere.
"""

from __future__ import annotations

import re
from datetime import date
from html import escape

import pygal
from pygal.style import Style

from services.office.views import Document, PeriodRow, number, trajectory

STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#0b0c0c",
    foreground_strong="#0b0c0c",
    foreground_subtle="#505a5f",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif",
    # actual (blue), trajectory (grey), target (green): told apart by shape and legend too
    colors=("#1d70b8", "#505a5f", "#00703c"),
    title_font_size=16,
    label_font_size=12,
    legend_font_size=13,
)


def describe(kpi: Document, rows: list[PeriodRow]) -> str:
    """The chart's description: what it shows, in a sentence screen readers read out."""
    unit = kpi["unit"]
    base, target = kpi["baseline"], kpi["target"]
    text = (
        f"Trajectory ({kpi['shape']}) from {number(base['value'], unit)} on {base['date']} to "
        f"the target {number(target['value'], unit)} by {target['date']}."
    )
    if not rows:
        return text + " No period has been reported yet."
    shown = "; ".join(f"{r.period}: {number(r.actual, unit)}" for r in rows)
    return text + f" Reported actuals: {shown}."


def x_labels(kpi: Document) -> list[date]:
    """One label per year the chart spans (its 1 January), each year once; a span within one
    year is labelled at its baseline and target dates."""
    start, end = (
        date.fromisoformat(kpi["baseline"]["date"]),
        date.fromisoformat(kpi["target"]["date"]),
    )
    years = [date(y, 1, 1) for y in range(start.year, end.year + 1)]
    inside = [d for d in years if start <= d <= end]
    return inside if len(inside) >= 2 else [start, end]


def kpi_chart(kpi: Document, rows: list[PeriodRow]) -> str:
    """The KPI's actual per period against its trajectory and its target, as SVG markup;
    ``kpi`` is the read API's series (GET /v1/kpis/{id}: its trajectory points)."""
    chart = pygal.DateLine(
        style=STYLE,
        js=[],
        css=["file://style.css", "file://graph.css"],
        disable_xml_declaration=True,
        explicit_size=False,
        width=800,
        height=400,
        show_dots=True,
        dots_size=4,
        x_label_rotation=0,
        x_labels=x_labels(kpi),
        x_value_formatter=lambda d: d.strftime("%Y") if (d.month, d.day) == (1, 1) else str(d),
        value_formatter=lambda v: number(v, kpi["unit"]),
        legend_at_bottom=True,
        truncate_legend=-1,
        title=kpi["title"],
        print_values=False,
    )
    chart.add(
        "Actual",
        [{"value": (r.end, r.actual), "label": r.period} for r in rows],
        stroke=len(rows) > 1,
    )
    chart.add("Trajectory", trajectory(kpi), show_dots=False)
    chart.add("Target", [(date.fromisoformat(kpi["target"]["date"]), kpi["target"]["value"])])
    svg: str = chart.render(is_unicode=True)
    return _accessible(svg, kpi, rows)


def _accessible(svg: str, kpi: Document, rows: list[PeriodRow]) -> str:
    """role=img with the chart's title and description as its name and description."""
    ident = re.sub(r"[^a-z0-9-]", "-", kpi["id"].lower())
    title_id, desc_id = f"chart-title-{ident}", f"chart-desc-{ident}"
    svg = re.sub(r"<title>.*?</title>", "", svg, count=1, flags=re.S)
    # pygal's inline config script is for its tooltips, which js=[] leaves out anyway.
    svg = re.sub(r"<script\b.*?</script>", "", svg, flags=re.S)
    head = (
        f'<title id="{title_id}">{escape(kpi["title"])}: actual against trajectory and '
        f'target</title><desc id="{desc_id}">{escape(describe(kpi, rows))}</desc>'
    )
    return re.sub(
        r"<svg\b([^>]*)>",
        lambda m: (
            f'<svg{m.group(1)} role="img" aria-labelledby="{title_id}" '
            f'aria-describedby="{desc_id}" focusable="false">{head}'
        ),
        svg,
        count=1,
    )
