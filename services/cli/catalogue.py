"""``cotn catalogue``: check and show the programme catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree

from services.cli.common import EXIT_FAILED, CatalogueOption, fail, open_catalogue
from shared.catalogue import (
    CATALOGUE_ENV,
    DEFAULT_CATALOGUE,
    Catalogue,
    Kpi,
    Proposal,
    check_catalogue,
)
from shared.durations import format_duration

app = typer.Typer(
    help="Check and show the programme catalogue: columns, proposals, milestones, KPIs.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn catalogue ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="catalogue")


@app.command()
def check(
    file: Annotated[
        Path,
        typer.Argument(
            envvar=CATALOGUE_ENV,
            show_default="the shipped catalogue",
            help="Catalogue file (YAML) to check.",
        ),
    ] = DEFAULT_CATALOGUE,
) -> None:
    """Check a catalogue file: print every problem with its place, one per line.

    Exits 1 if there is any problem, else prints a one-line summary and exits 0.
    """
    catalogue, problems = check_catalogue(file)
    if catalogue is None:
        for problem in problems:
            typer.echo(problem)
        fail(f"{len(problems)} problem(s) in {file}", EXIT_FAILED)
    typer.echo(f"OK {file}: {summary(catalogue)}")


def summary(catalogue: Catalogue) -> str:
    """Counts of what a catalogue holds, for one line."""
    gamechangers = sum(p.kind == "gamechanger" for p in catalogue.proposals)
    return (
        f"{len(catalogue.columns)} columns, "
        f"{len(catalogue.proposals) - gamechangers} proposals and {gamechangers} gamechangers, "
        f"{len(catalogue.kpis)} KPIs, {len(catalogue.authorities)} authorities"
    )


@app.command()
def show(
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the validated catalogue as JSON instead.")
    ] = False,
) -> None:
    """Show the programme: columns, their proposals and milestones, and the KPIs."""
    programme = open_catalogue(catalogue)
    if as_json:
        typer.echo(json.dumps(programme.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    Console().print(programme_view(programme))


def programme_view(catalogue: Catalogue) -> Group:
    """A readable view: one tree per column, then the KPIs."""
    heading = Text(catalogue.programme, style="bold")
    heading.append(f"\n{catalogue.status}\n", style="dim")
    columns = [_column_tree(catalogue, column.id) for column in catalogue.columns]
    return Group(heading, *columns, _kpi_tree(catalogue.kpis))


def _column_tree(catalogue: Catalogue, column_id: str) -> Tree:
    column = catalogue.column_by_id[column_id]
    tree = Tree(Text(f"{column.title} [{column.id}]", style="bold cyan"))
    for proposal in catalogue.proposals_of(column_id):
        branch = tree.add(_proposal_label(proposal))
        for milestone in proposal.milestones:
            line = Text(f"{milestone.due}  {milestone.id}: {milestone.title}")
            if milestone.follows:
                after = ", ".join(
                    f"{f.proposal or proposal.id}/{f.milestone}"
                    + (f" +{format_duration(f.lag)}" if f.lag else "")
                    + (" (draft)" if f.draft else "")
                    for f in milestone.follows
                )
                line.append(f"  follows {after}", style="dim")
            branch.add(line)
    return tree


def _proposal_label(proposal: Proposal) -> Text:
    label = Text(f"{proposal.id}  {proposal.title}", style="bold")
    facts = [
        f"priority {proposal.priority}" if proposal.priority else proposal.kind,
        f"{len(proposal.partners)} partners",
        f"stalls after {format_duration(proposal.stall_threshold)} without progress",
    ]
    if proposal.dates_are_draft:
        facts.append("draft dates")
    label.append(f"  ({', '.join(facts)})", style="dim")
    return label


def _kpi_tree(kpis: list[Kpi]) -> Tree:
    tree = Tree(Text("KPIs", style="bold cyan"))
    for kpi in kpis:
        branch = tree.add(Text(f"{kpi.id}  {kpi.title}", style="bold"))
        draft = ", draft target" if kpi.target_is_draft else ""
        branch.add(
            Text(
                f"{_number(kpi.baseline.value)} -> {_number(kpi.target.value)} {kpi.unit}, "
                f"{kpi.baseline.date} to {kpi.target.date} "
                f"({kpi.shape}, {kpi.direction} is good{draft})"
            )
        )
        branch.add(
            Text(
                f"evidences {', '.join(kpi.evidences)}; reported by {', '.join(kpi.reporters)}",
                style="dim",
            )
        )
    return tree


def _number(value: float) -> str:
    return f"{int(value):,}" if value.is_integer() else f"{value:,}"
