"""``cotn serve ingest|aggregator|office``: run one service with uvicorn.

``cotn run`` starts its parts with these commands and docker-compose runs the same ones,
so the embedded run and a deployment start the same programs. Settings come from the
service's environment (``COTN_INGEST_*``, ``COTN_AGGREGATOR_*``, ``COTN_OFFICE_*``); an
option given here overrides its variable.
"""

from __future__ import annotations

import signal
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, fail
from services.cli.supervisor import port_is_free

GRACEFUL_SHUTDOWN = 10
"""Seconds uvicorn gives requests in flight after SIGTERM."""
OFFICE_GRACEFUL_SHUTDOWN = 2
"""The office's: its live-update streams never end by themselves, so they are cut sooner."""

app = typer.Typer(
    help="Run one service in the foreground (what `cotn run` and docker-compose start).",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn serve ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="serve")


HostOption = Annotated[str | None, typer.Option(help="Interface to listen on.", show_default=False)]
PortOption = Annotated[
    int | None, typer.Option(min=1, max=65535, help="Port to listen on.", show_default=False)
]
NatsOption = Annotated[
    str | None,
    typer.Option(
        help="NATS server URL, or a comma-separated list of a cluster's seeds.", show_default=False
    ),
]
CatalogueFileOption = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="Programme catalogue (YAML).", show_default=False),
]


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


LogLevelOption = Annotated[LogLevel, typer.Option(help="uvicorn log level.")]


def _given(**options: Any) -> dict[str, Any]:
    """Only the options given on the command line, so the environment fills the rest."""
    return {name: value for name, value in options.items() if value is not None}


def _settings(kind: Any, options: dict[str, Any]) -> Any:
    """Build a settings object, or leave with one line naming each bad setting as an option
    and as its environment variable."""
    try:
        return kind(**options)
    except ValidationError as exc:
        prefix = kind.model_config["env_prefix"]
        problems = "; ".join(_setting_problem(prefix, e) for e in exc.errors())
        fail(f"invalid settings: {problems}", EXIT_BAD_INPUT)


def _setting_problem(prefix: str, error: Any) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    if not name:
        return str(error["msg"])
    return f"--{name.replace('_', '-')} ({prefix}{name.upper()}): {error['msg']}"


def _stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM once uvicorn has shut down: the stop was graceful, the exit code says so."""


def _serve(
    application: Any,
    host: str,
    port: int,
    log_level: LogLevel,
    graceful_shutdown: int = GRACEFUL_SHUTDOWN,
) -> None:
    """Run ``application`` until SIGINT or SIGTERM; refuse a busy port in one line first.

    A graceful stop on SIGTERM exits 0: after shutting down, uvicorn raises the signal
    again for the handler it found, which by default would end the process with -15.
    """
    import uvicorn

    if not port_is_free(host, port):
        fail(f"port {port} on {host} is busy: stop what uses it or choose another --port")
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=log_level.value,
        timeout_graceful_shutdown=graceful_shutdown,
    )


@app.command()
def ingest(
    column: Annotated[
        str | None,
        typer.Option(help="Catalogue column whose events it accepts.", show_default=False),
    ] = None,
    host: HostOption = None,
    port: PortOption = None,
    nats_url: NatsOption = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where tokens.json lives.", show_default=False),
    ] = None,
    catalogue: CatalogueFileOption = None,
    log_level: LogLevelOption = LogLevel.info,
) -> None:
    """Run a column service: POST /v1/events for one column's proposals."""
    from services.ingest.app import UnknownColumnError, create_app
    from services.ingest.settings import IngestSettings
    from shared.catalogue import CatalogueError

    settings = _settings(
        IngestSettings,
        _given(
            column=column,
            host=host,
            port=port,
            nats_url=nats_url,
            data_dir=data_dir,
            catalogue=catalogue,
        ),
    )
    try:
        application = create_app(settings)
    except UnknownColumnError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except CatalogueError as exc:
        fail(f"catalogue {exc.source} is not usable: {exc.problems[0]}", EXIT_BAD_INPUT)
    _serve(application, settings.host, settings.port, log_level)


@app.command()
def aggregator(
    host: HostOption = None,
    port: PortOption = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy database URL.", show_default=False)
    ] = None,
    nats_url: NatsOption = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Where tokens.json lives (office tokens review).",
            show_default=False,
        ),
    ] = None,
    catalogue: CatalogueFileOption = None,
    log_level: LogLevelOption = LogLevel.info,
) -> None:
    """Run the aggregator: consume the events, store them and serve the read API."""
    from services.aggregator.app import create_app
    from services.aggregator.settings import AggregatorSettings
    from shared.catalogue import CatalogueError

    settings = _settings(
        AggregatorSettings,
        _given(
            host=host,
            port=port,
            database_url=database_url,
            nats_url=nats_url,
            data_dir=data_dir,
            catalogue=catalogue,
        ),
    )
    try:
        application = create_app(settings)
    except CatalogueError as exc:
        fail(f"catalogue {exc.source} is not usable: {exc.problems[0]}", EXIT_BAD_INPUT)
    except ValueError as exc:
        fail(f"cannot start the aggregator: {exc}", EXIT_FAILED)
    _serve(application, settings.host, settings.port, log_level)


@app.command()
def office(
    host: HostOption = None,
    port: PortOption = None,
    aggregator_url: Annotated[
        str | None,
        typer.Option(help="Base URL of the aggregator's read API.", show_default=False),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where tokens.json lives (login).", show_default=False),
    ] = None,
    log_level: LogLevelOption = LogLevel.info,
) -> None:
    """Run the programme office's web board: pages over the aggregator's read API."""
    from services.office.app import create_app
    from services.office.settings import OfficeSettings

    settings = _settings(
        OfficeSettings,
        _given(host=host, port=port, aggregator_url=aggregator_url, data_dir=data_dir),
    )
    _serve(create_app(settings), settings.host, settings.port, log_level, OFFICE_GRACEFUL_SHUTDOWN)
