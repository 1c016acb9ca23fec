"""``cotn token``: issue, revoke and list the bearer tokens authority systems post with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.cli.common import (
    DEFAULT_DATA_DIR,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    CatalogueOption,
    DataDirOption,
    fail,
    open_catalogue,
    unknown,
)
from shared.catalogue import DEFAULT_CATALOGUE
from shared.tokens import TokenRecord, TokenStore, read_last_used

app = typer.Typer(
    help="Issue, revoke and list the bearer tokens authority systems post events with. "
    "A token is shown once, when it is issued; only its SHA-256 hash is kept.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn token ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="token")


@contextmanager
def _token_file(data_dir: Path) -> Iterator[TokenStore]:
    """The token store, with an unusable token file reported as one line."""
    store = TokenStore.in_dir(data_dir)
    try:
        yield store
    except OSError as exc:
        fail(f"cannot use the token file {store.path}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    except (ValueError, TypeError) as exc:
        fail(f"the token file {store.path} is damaged: {exc}", EXIT_BAD_INPUT)


@app.command()
def create(
    authority: Annotated[
        str,
        typer.Argument(
            metavar="AUTHORITY", help="Id of the authority or body, e.g. greater-manchester."
        ),
    ],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
) -> None:
    """Issue a token for AUTHORITY and print it, alone, on stdout.

    The token is not stored and cannot be shown again: hand it to the authority's
    system now. Only its hash goes into DIR/tokens.json.
    """
    known = open_catalogue(catalogue).authority_by_id
    if authority not in known:
        unknown("authority", authority, list(known))
    with _token_file(data_dir) as store:
        token, record = store.create(authority)
    typer.echo(token)
    typer.echo(
        f"Token {record.token_id} issued to {authority} and its hash stored in {store.path}. "
        "Copy it now: it is not shown again.",
        err=True,
    )


@app.command()
def revoke(
    token_or_id: Annotated[
        str, typer.Argument(metavar="TOKEN_OR_ID", help="The token itself, or its id.")
    ],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Revoke a token, given by its value or its id; services refuse it at once."""
    with _token_file(data_dir) as store:
        record = store.revoke(token_or_id)
    if record is None:
        # Never echo the argument: it may be a live secret typed by mistake.
        fail(f"no live token in {store.path} has that value or id", EXIT_FAILED)
    typer.echo(f"Revoked token {record.token_id} of {record.authority}.")


@app.command("list")
def list_tokens(data_dir: DataDirOption = DEFAULT_DATA_DIR) -> None:
    """List the tokens issued: id, authority, when created, last used and revoked.

    Neither tokens nor their hashes are shown. The column services note uses in memory and
    write them out about once a minute, so "last used" may lag by that much.
    """
    with _token_file(data_dir) as store:
        records = store.list()
        last_used = read_last_used(data_dir)
    if not records:
        typer.echo(f"No tokens issued yet in {store.path}.")
        return
    Console().print(_token_table(records, last_used))


def _token_table(records: list[TokenRecord], last_used: dict[str, str]) -> Table:
    table = Table("id", "authority", "created (UTC)", "last used (UTC)", "revoked (UTC)")
    for record in records:
        used = last_used.get(record.token_id)
        table.add_row(
            Text(record.token_id),
            Text(record.authority),
            Text(_when(record.created_at)),
            Text(_when(used) if used else "never"),
            Text(_when(record.revoked_at) if record.revoked_at else "-"),
        )
    return table


def _when(stamp: str) -> str:
    """A stored ISO timestamp, shortened to fit a terminal table."""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp
