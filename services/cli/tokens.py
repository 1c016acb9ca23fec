"""``cotn token``: issue, revoke and list the bearer tokens authority systems post with, and
the programme office's tokens (``--office``), which review returns and post no events."""

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
from shared.tokens import TokenRecord, TokenStore, check_office_name, read_last_used

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
        str | None,
        typer.Argument(
            metavar="AUTHORITY",
            help="Id of the authority or body, e.g. greater-manchester (not with --office).",
            show_default=False,
        ),
    ] = None,
    office: Annotated[
        str | None,
        typer.Option(
            "--office",
            metavar="NAME",
            help="Issue an office identity's token instead (its events' source is "
            "office/NAME; NAME a lowercase slug): it reviews returns through the aggregator "
            "and sends no events.",
        ),
    ] = None,
    member_of: Annotated[
        str | None,
        typer.Option(
            "--member-of",
            metavar="AUTHORITY",
            help="With --office: the authority the person also belongs to, whose returns "
            "they may not review.",
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
) -> None:
    """Issue a token for AUTHORITY (or an office identity) and print it, alone, on stdout.

    The token is not stored and cannot be shown again: hand it to the authority's
    system now. Only its hash goes into DIR/tokens.json.
    """
    known = open_catalogue(catalogue).authority_by_id
    for given in (authority, member_of):
        if given is not None and given not in known:
            unknown("authority", given, list(known))
    if (authority is None) == (office is None):
        fail("give an AUTHORITY or --office NAME: exactly one of them", EXIT_BAD_INPUT)
    if office is None and member_of is not None:
        fail("--member-of goes with --office: an authority's token is its own", EXIT_BAD_INPUT)
    if office is not None:
        try:
            check_office_name(office)  # before the store, which reads a ValueError as damage
        except ValueError as exc:
            fail(str(exc), EXIT_BAD_INPUT)
    with _token_file(data_dir) as store:
        if office is None:
            token, record = store.create(str(authority))
        else:
            token, record = store.create_office(office, member_of=member_of)
    typer.echo(token)
    typer.echo(
        f"Token {record.token_id} issued to {record.authority}{_membership(record)} and its hash "
        f"stored in {store.path}. Copy it now: it is not shown again.",
        err=True,
    )


def _membership(record: TokenRecord) -> str:
    return f" (member of {record.member_of})" if record.member_of else ""


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
    """List the tokens issued: id, authority, when created, last used, revoked and role.

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
    table = Table("id", "authority", "created (UTC)", "last used (UTC)", "revoked (UTC)", "role")
    for record in records:
        used = last_used.get(record.token_id)
        table.add_row(
            Text(record.token_id),
            Text(record.authority),
            Text(_when(record.created_at)),
            Text(_when(used) if used else "never"),
            Text(_when(record.revoked_at) if record.revoked_at else "-"),
            Text(record.role + _membership(record)),
        )
    return table


def _when(stamp: str) -> str:
    """A stored ISO timestamp, shortened to fit a terminal table."""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp
