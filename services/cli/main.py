"""The ``cotn`` command for people: a thin registry of sub-commands, one module each.

A new command is a module under ``services/cli`` with a ``register(app)`` function,
and one entry in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import typer

from services.cli import (
    apidocs,
    asyncapi,
    catalogue,
    dashboards,
    deploy,
    export,
    nats,
    post,
    replay,
    reporting,
    review,
    run,
    serve,
    status,
    tokens,
)

COMMAND_MODULES = (
    tokens,
    catalogue,
    post,
    serve,
    nats,
    run,
    status,
    reporting,
    review,
    export,
    replay,
    asyncapi,
    apidocs,
    dashboards,
    deploy,
)

app = typer.Typer(
    name="cotn",
    no_args_is_help=True,
    # A traceback's locals could include a token.
    pretty_exceptions_show_locals=False,
    epilog="Errors are one line on stderr. Exit codes: 0 done; 1 refused or failed a check; "
    "2 bad input; 3 a service was unreachable or unavailable: try again.",
)


@app.callback()
def main() -> None:
    """COTN delivery monitor: the command line for the programme office and authority systems."""


for _module in COMMAND_MODULES:
    _module.register(app)
