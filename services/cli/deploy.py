"""``cotn deploy build``: the deployment's per-column files, generated from the catalogue.

The compose file and its cluster override, the Prometheus targets, the Alertmanager routes
and receivers and the NATS users all have one entry per catalogue column. They are rendered
by :mod:`shared.deployment`; this command writes them (into the source tree by default), or
with ``--check`` names each committed file that differs from what the catalogue generates.
A new column is one catalogue edit and ``cotn deploy build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, CatalogueOption, fail, open_catalogue
from services.cli.run import DEFAULT_PORT
from shared.catalogue import DEFAULT_CATALOGUE, Catalogue
from shared.deployment import deployment_files

SOURCE_TREE = Path(__file__).resolve().parents[2]

app = typer.Typer(
    help="Generate the deployment's per-column files (compose, Prometheus, Alertmanager, "
    "NATS) from the catalogue.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn deploy ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="deploy")


def expected_files(catalogue: Catalogue) -> dict[str, str]:
    """Every generated file for ``catalogue`` (path from the repository root -> text), with
    the ports of ``cotn run``."""
    return deployment_files([c.id for c in catalogue.columns], aggregator_port=DEFAULT_PORT)


def differing(files: dict[str, str], root: Path) -> list[str]:
    """The paths under ``root`` that are missing or differ from ``files``."""
    changed = []
    for name, text in files.items():
        path = root / name
        try:
            same = path.read_text(encoding="utf-8") == text
        except (FileNotFoundError, IsADirectoryError):
            same = False
        if not same:
            changed.append(name)
    return changed


def _target(out: Path | None) -> Path:
    if out is not None:
        return out
    if not (SOURCE_TREE / "deploy").is_dir():
        fail("not run from a source checkout: give --out DIR", EXIT_BAD_INPUT)
    return SOURCE_TREE


@app.command()
def build(
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Repository root to write the files under.",
            show_default="the source tree",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing; fail naming each file that differs from what the catalogue "
            "generates.",
        ),
    ] = False,
) -> None:
    """Write docker-compose.yml, docker-compose.cluster.yml, deploy/prometheus/prometheus.yml,
    deploy/alertmanager/alertmanager.yml and deploy/nats/nats.conf from the catalogue's
    columns, and print each file written."""
    files = expected_files(open_catalogue(catalogue))
    root = _target(out)
    if check:
        changed = differing(files, root)
        if changed:
            fail(
                f"{', '.join(changed)} under {root} differ from what the catalogue generates: "
                "run `cotn deploy build`",
                EXIT_FAILED,
            )
        typer.echo(f"{len(files)} deployment files under {root} match the catalogue.")
        return
    for name, text in files.items():
        path = root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {path}: {exc}", EXIT_FAILED)
        typer.echo(str(path))
