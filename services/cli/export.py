"""``cotn export``: the programme's returns upwards, from the aggregator's read API.

``cotn export iati [--as-at DATE]`` writes the IATI 2.03 activities document
(``GET /v1/exports/iati-activities.xml``); ``cotn export gmpp --quarter 2026-Q3 [--json]``
the GMPP-style quarterly return (``GET /v1/exports/gmpp.csv`` or ``.json``). Both go to
standard output, or to ``--output FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer

from services.cli.reporting import EXIT_CODES, TimeoutOption, UrlOption, call, refuse
from services.cli.status import DEFAULT_URL, instant

OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write to this file instead of standard output."),
]

export_app = typer.Typer(
    name="export",
    help="Returns upwards: IATI 2.03 activities for funders, a GMPP-style quarterly return.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn export iati|gmpp`` to the ``cotn`` app."""
    parent.add_typer(export_app)


def _write(response: httpx.Response, output: Path | None) -> None:
    if response.status_code != httpx.codes.OK:
        refuse(response)
    if output is None:
        typer.echo(response.text, nl=False)
    else:
        output.write_bytes(response.content)
        typer.echo(f"wrote {output} ({len(response.content):,} bytes)", err=True)


@export_app.command("iati", epilog=EXIT_CODES)
def iati(
    as_at: Annotated[
        str | None,
        typer.Option(
            "--as-at",
            metavar="DATE",
            help="The programme as now known for a past instant: an RFC 3339 time, or a date "
            "(its end, UTC). Default: now.",
        ),
    ] = None,
    output: OutputOption = None,
    url: UrlOption = DEFAULT_URL,
    timeout: TimeoutOption = 60.0,
) -> None:
    """The IATI 2.03 activities document: one activity per proposal and gamechanger, its
    KPIs as outcome results (approved values only) and its milestones as output results."""
    params = {"as_at": instant(as_at, "--as-at") if as_at else None}
    response = call("GET", url, "/v1/exports/iati-activities.xml", timeout=timeout, params=params)
    _write(response, output)


@export_app.command("gmpp", epilog=EXIT_CODES)
def gmpp(
    quarter: Annotated[
        str, typer.Option("--quarter", metavar="YYYY-QN", help="The quarter, as 2026-Q3.")
    ],
    json: Annotated[bool, typer.Option("--json", help="JSON instead of CSV.")] = False,
    output: OutputOption = None,
    url: UrlOption = DEFAULT_URL,
    timeout: TimeoutOption = 60.0,
) -> None:
    """The GMPP-style quarterly return as at the quarter's end (now, while it runs): one row
    per proposal and gamechanger, with its Delivery Confidence Assessment."""
    path = "/v1/exports/gmpp.json" if json else "/v1/exports/gmpp.csv"
    response = call("GET", url, path, timeout=timeout, params={"quarter": quarter})
    _write(response, output)
