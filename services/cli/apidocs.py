"""``cotn docs build``: the AsyncAPI and OpenAPI documents, written from the code.

The committed copies in ``docs/`` are what integrators read without running anything;
``--check`` (and a test) fail when they differ from what the code generates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from services.cli.asyncapi import document as asyncapi_document
from services.cli.common import EXIT_FAILED, fail

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"

docs_app = typer.Typer(no_args_is_help=True, help="Generated API documents.")


def register(parent: typer.Typer) -> None:
    """Add ``cotn docs`` to the ``cotn`` app."""
    parent.add_typer(docs_app, name="docs")


def _openapi(service: str) -> str:
    if service == "ingest":
        from services.ingest.app import create_app as ingest_app
        from services.ingest.settings import IngestSettings

        spec = ingest_app(IngestSettings(column="collaboration")).openapi()
    else:
        from services.aggregator.app import create_app as aggregator_app
        from services.aggregator.settings import AggregatorSettings

        app = aggregator_app(AggregatorSettings(database_url="sqlite+aiosqlite:///:memory:"))
        spec = app.openapi()
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "asyncapi.yaml": asyncapi_document,
    "openapi-ingest.json": lambda: _openapi("ingest"),
    "openapi-aggregator.json": lambda: _openapi("aggregator"),
}


def generated() -> dict[str, str]:
    """Every document by file name, as the code generates it now."""
    return {name: make() for name, make in GENERATORS.items()}


@docs_app.command("build")
def build(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where to write.")] = DOCS_DIR,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; fail if a file differs.")
    ] = False,
) -> None:
    """Write docs/asyncapi.yaml and the column service's and aggregator's OpenAPI documents."""
    stale = []
    for name, text in generated().items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not check:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if check and stale:
        fail(f"out of date in {out}: {', '.join(stale)}; run `cotn docs build`", EXIT_FAILED)
    typer.echo(f"{'checked' if check else 'wrote'} {len(GENERATORS)} documents in {out}", err=True)
