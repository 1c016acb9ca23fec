"""What the ``cotn`` commands share: common options, exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from shared.catalogue import (
    CATALOGUE_ENV,
    DEFAULT_CATALOGUE,
    Catalogue,
    CatalogueError,
    load_catalogue,
)

DATA_DIR_ENV = "COTN_DATA_DIR"
DEFAULT_DATA_DIR = Path(".cotn")

EXIT_FAILED = 1
"""The request was understood and refused: a rejection, a failed check, nothing to revoke."""
EXIT_BAD_INPUT = 2
"""The input is wrong (as for click's usage errors): fix it before trying again."""
EXIT_UNAVAILABLE = 3
"""Nothing was refused, the other side could not answer: try again with the same input."""

CatalogueOption = Annotated[
    Path,
    typer.Option(
        "--catalogue",
        envvar=CATALOGUE_ENV,
        metavar="FILE",
        show_default="the shipped catalogue",
        help="Programme catalogue (YAML).",
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        metavar="DIR",
        help="Where the services keep their data; tokens are in DIR/tokens.json.",
    ),
]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` as one line on stderr and leave with ``code``."""
    one_line = " ".join(message.split())
    typer.echo(f"cotn: error: {one_line}", err=True)
    raise typer.Exit(code)


def open_catalogue(path: Path = DEFAULT_CATALOGUE) -> Catalogue:
    """Load the catalogue or leave with one line naming its first problem."""
    try:
        return load_catalogue(path)
    except CatalogueError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        fail(
            f"catalogue {exc.source} is not usable: {exc.problems[0]}{more}; "
            f"run `cotn catalogue check {exc.source}` to see every problem",
            EXIT_BAD_INPUT,
        )


def unknown(kind: str, value: str, known: list[str]) -> NoReturn:
    """Leave because ``value`` is not one of the ``known`` ids of ``kind``."""
    fail(f"unknown {kind} {value!r}; known: {', '.join(known)}", EXIT_BAD_INPUT)
