"""The ``cotn`` command (placeholder until the CLI lands)."""

import typer

app = typer.Typer(no_args_is_help=True)


@app.callback()
def main() -> None:
    """COTN delivery monitor."""
