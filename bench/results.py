"""Figures, their samples and goals; the Rich table and the JSON file of a bench run."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from bench.harness import median

GoalKind = Literal["ratio_at_least", "ratio_at_most", "below", "at_least", "at_most"]
SCHEMA = 1


@dataclass(frozen=True)
class Goal:
    """What the figure must reach: on its value, or on its ratio to its baseline."""

    kind: GoalKind
    value: float

    def met(self, median_value: float, ratio: float | None) -> bool | None:
        if self.kind in ("ratio_at_least", "ratio_at_most"):
            if ratio is None or math.isnan(ratio):
                return None
            return ratio >= self.value if self.kind == "ratio_at_least" else ratio <= self.value
        if math.isnan(median_value):
            return None
        if self.kind == "below":
            return median_value < self.value
        if self.kind == "at_most":
            return median_value <= self.value
        return median_value >= self.value

    def text(self, unit: str) -> str:
        if self.kind == "ratio_at_least":
            return f"≥ {self.value:.0%} of baseline"
        if self.kind == "ratio_at_most":
            return f"≤ {self.value:.0%} of baseline"
        sign = {"below": "<", "at_least": "≥", "at_most": "≤"}[self.kind]
        return f"{sign} {_number(self.value)} {unit}".strip()


@dataclass(frozen=True)
class Spec:
    """One reported figure: its key, label, unit, baseline (another key) and goal."""

    key: str
    label: str
    unit: str
    baseline: str | None = None
    goal: Goal | None = None
    note: str = ""


@dataclass
class Figure:
    spec: Spec
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.samples)


@dataclass
class Results:
    """Every figure of one bench invocation, in the order they were first measured."""

    figures: dict[str, Figure] = field(default_factory=dict)
    details: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, spec: Spec, value: float) -> None:
        self.figures.setdefault(spec.key, Figure(spec)).samples.append(value)

    def detail(self, key: str, info: dict[str, Any]) -> None:
        """Extra facts of one run (sizes, counts) kept in the JSON beside the figures."""
        self.details.setdefault(key, []).append(info)

    def ratio(self, figure: Figure) -> float | None:
        if figure.spec.baseline is None:
            return None
        base = self.figures.get(figure.spec.baseline)
        if base is None or not base.samples or base.median == 0:
            return None
        return figure.median / base.median

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for figure in self.figures.values():
            spec, ratio = figure.spec, self.ratio(figure)
            out.append(
                {
                    "key": spec.key,
                    "label": spec.label,
                    "unit": spec.unit,
                    "runs": len(figure.samples),
                    "samples": figure.samples,
                    "median": figure.median,
                    "min": min(figure.samples),
                    "max": max(figure.samples),
                    "baseline": spec.baseline,
                    "ratio": ratio,
                    "goal": spec.goal.text(spec.unit) if spec.goal else None,
                    "goal_met": spec.goal.met(figure.median, ratio) if spec.goal else None,
                    "note": spec.note,
                }
            )
        return out

    def document(self, *, meta: dict[str, Any]) -> dict[str, Any]:
        return {"schema": SCHEMA, **meta, "figures": self.rows(), "details": self.details}


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: Results, title: str) -> Table:
    out = Table(title=title, title_justify="left")
    for name, justify in (
        ("figure", "left"),
        ("median", "right"),
        ("min", "right"),
        ("max", "right"),
        ("unit", "left"),
        ("ratio", "right"),
        ("goal", "left"),
        ("", "center"),
    ):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in results.rows():
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        verdict = {True: "[green]met[/]", False: "[red]not met[/]", None: ""}[row["goal_met"]]
        out.add_row(
            row["label"],
            _number(row["median"]),
            _number(row["min"]),
            _number(row["max"]),
            row["unit"],
            ratio,
            row["goal"] or "",
            verdict,
        )
    return out


def markdown(results: Results) -> str:
    """The table as Markdown (for the README's Performance section)."""
    lines = [
        "| figure | median | min | max | unit | ratio to baseline | goal | |",
        "|---|--:|--:|--:|---|--:|---|---|",
    ]
    for row in results.rows():
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        verdict = {True: "met", False: "**not met**", None: ""}[row["goal_met"]]
        lines.append(
            f"| {row['label']} | {_number(row['median'])} | {_number(row['min'])} | "
            f"{_number(row['max'])} | {row['unit']} | {ratio} | {row['goal'] or ''} | {verdict} |"
        )
    return "\n".join(lines)


def write(results: Results, meta: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"bench-{stamp}.json"
    path.write_text(json.dumps(results.document(meta=meta), indent=2, default=str) + "\n")
    return path


def show(results: Results, title: str, console: Console | None = None) -> None:
    (console or Console()).print(table(results, title))
