"""``cotn nats setup|config``: the bus's streams and consumer, and who may do what on NATS.

The services log in to NATS as least-privilege users (:mod:`shared.natsauth`): a column
service may publish only its own column's events, the aggregator may only read its durable
consumer and publish status events and dead letters, and neither may create, change or
delete a stream. ``setup`` makes the streams and the aggregator's consumer with the
administrator's credentials before the services start (docker-compose runs it once;
``cotn run`` does the same itself). ``config`` writes the deployment's nats-server
configuration, users and permissions included (``deploy/nats/nats.conf``, which
``cotn deploy build`` writes too, with the other per-column deployment files).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import nats
import nats.errors
import typer
from nats.aio.client import Client
from pydantic import ValidationError

from services.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    CatalogueOption,
    fail,
    open_catalogue,
)
from shared.bus import (
    AGGREGATOR_DURABLE,
    DLQ_STREAM,
    EVENTS_STREAM,
    STATUS_STREAM,
    ensure_streams,
)
from shared.catalogue import DEFAULT_CATALOGUE
from shared.deployment import NATS_FILE, nats_config
from shared.natsauth import (
    ENVIRONMENT_VARIABLE,
    inbox_prefix,
    refuse_placeholder,
    server_urls,
    user_of,
    without_credentials,
)

if TYPE_CHECKING:
    from services.aggregator.settings import AggregatorSettings

ADMIN_URL_ENV = "COTN_NATS_ADMIN_URL"
DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / NATS_FILE
SETUP_TIMEOUT = 5.0

app = typer.Typer(
    help="Set up the NATS streams with the administrator's credentials, or write the "
    "deployment's nats-server configuration (users and permissions).",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn nats ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="nats")


def deployment_config(columns: list[str]) -> str:
    """The whole of ``deploy/nats/nats.conf`` for a catalogue with ``columns`` (the file
    ``cotn deploy build`` writes with the other deployment files)."""
    return nats_config(columns)


def _aggregator_settings() -> AggregatorSettings:
    from services.aggregator.settings import AggregatorSettings

    return AggregatorSettings()


async def _raised_anyway(exc: Exception) -> None:
    """nats-py's default callback logs a traceback for what ``connect`` raises anyway."""


async def _connect_once(url: str) -> Client:
    """A connection to the first server of ``url`` (one URL or a list) that answers, each
    tried twice at most; NoServersError when none does."""
    return await nats.connect(
        servers=server_urls(url),
        inbox_prefix=inbox_prefix(user_of(url)),
        connect_timeout=SETUP_TIMEOUT,
        # nats-py retries a server for ever unless attempts are bounded (0 is unbounded).
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.2,
        dont_randomize=True,
        error_cb=_raised_anyway,
    )


async def setup_bus(url: str, settings: AggregatorSettings | None = None) -> None:
    """Create or update the streams and the aggregator's durable consumer, once.

    The consumer is configured from the aggregator's settings (``COTN_AGGREGATOR_*`` by
    default), so it is the one the aggregator would have made for itself.
    """
    from services.aggregator.consumer import ensure_consumer

    settings = settings or _aggregator_settings()
    client = await _connect_once(url)
    try:
        js = client.jetstream(timeout=SETUP_TIMEOUT)
        await ensure_streams(js, settings.stream_settings())
        await ensure_consumer(js, settings)
    finally:
        await client.close()


async def setup_until_done(
    url: str, within: float, settings: AggregatorSettings | None = None
) -> None:
    """:func:`setup_bus`, retried while the server starts; raises the last error after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            await setup_bus(url, settings)
            return
        except (nats.errors.Error, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


@app.command()
def setup(
    nats_url: Annotated[
        str,
        typer.Option(
            envvar=ADMIN_URL_ENV,
            help="The server, with the administrator's credentials: "
            "nats://cotn-admin:PASSWORD@host:4222, or a comma-separated list of a cluster's "
            "seeds, each with them.",
        ),
    ] = "nats://127.0.0.1:4222",
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to keep trying while the server starts.")
    ] = 30.0,
) -> None:
    """Create or update the streams and the aggregator's durable consumer.

    Run once before the services start (docker-compose runs it as a one-shot service);
    they run with `manage_streams` off, as users that may not manage streams.
    """
    try:
        refuse_placeholder(nats_url, os.environ.get(ENVIRONMENT_VARIABLE, ""))
        user_of(nats_url)  # one user for every server of a list
    except ValueError as exc:
        fail(f"--nats-url ({ADMIN_URL_ENV}): {exc}", EXIT_BAD_INPUT)
    shown = without_credentials(nats_url)
    try:
        settings = _aggregator_settings()
    except ValidationError as exc:
        fail(f"invalid aggregator settings (COTN_AGGREGATOR_*): {exc}", EXIT_BAD_INPUT)
    try:
        asyncio.run(setup_until_done(nats_url, wait, settings))
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        fail(f"cannot set up the streams on {shown}: {exc!r}", EXIT_UNAVAILABLE)
    typer.echo(
        f"Streams {EVENTS_STREAM}, {DLQ_STREAM}, {STATUS_STREAM} and consumer "
        f"{AGGREGATOR_DURABLE} are set up on {shown}."
    )


@app.command("config")
def config(
    out: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write here instead of printing.", show_default=False),
    ] = None,
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
) -> None:
    """The deployment's nats-server configuration: one user per service, least privilege.

    Passwords are read by nats-server from COTN_NATS_<USER>_PASSWORD variables; the
    placeholder the compose file defaults them to is refused by the services unless
    COTN_ENV=development.
    """
    text = deployment_config([c.id for c in open_catalogue(catalogue).columns])
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(str(out))
