"""``cotn reporting``: how complete and timely the authorities' returns are, from the
aggregator's read API (``GET /v1/reporting``, ``GET /v1/reporting/{authority}``).

Also what ``cotn review`` shares with it: asking the aggregator over HTTP, and turning its
RFC 9457 problem documents into one error line per field. Text from events and the
catalogue is rendered as plain :class:`rich.text.Text`, never as markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, fail
from services.cli.status import DEFAULT_URL

Document = Mapping[str, Any]

EXIT_CODES = (
    "Exit codes: 0 done (for a review: made, or already so); 1 refused by the aggregator "
    "(401 no or unknown token, 403 not allowed, 409 not in a state for it); 2 bad input "
    "(options, or the aggregator's 404/422 naming the field); 3 the aggregator was unreachable "
    "or unavailable (503): try again with the same command."
)

UrlOption = Annotated[str, typer.Option("--url", help="Base URL of the aggregator.")]
TimeoutOption = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for the aggregator's answer.")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the aggregator's JSON document as it came.")
]


def register(parent: typer.Typer) -> None:
    """Add ``cotn reporting`` to the ``cotn`` app."""
    parent.command("reporting", epilog=EXIT_CODES)(reporting)


# -- asking the aggregator ----------------------------------------------------------------------


def call(
    method: str,
    url: str,
    path: str,
    *,
    timeout: float,
    params: Mapping[str, str | int | None] | None = None,
    body: Mapping[str, Any] | None = None,
    token: str | None = None,
) -> httpx.Response:
    """One request to the aggregator at ``url``; leaves with one line if it cannot be made.

    Only the parameters given are sent: the aggregator refuses one it does not know.
    """
    endpoint = url.rstrip("/") + path
    headers = {"Accept": "application/json, application/problem+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    sent = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        return httpx.request(
            method, endpoint, params=sent, json=body, headers=headers, timeout=timeout
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        fail(f"invalid --url {url}: {exc}", EXIT_BAD_INPUT)
    except httpx.TimeoutException:
        fail(f"{endpoint} did not answer within {timeout:g} s", EXIT_UNAVAILABLE)
    except httpx.TransportError as exc:
        fail(f"cannot reach {endpoint}: {str(exc) or type(exc).__name__}", EXIT_UNAVAILABLE)


def document_of(response: httpx.Response, *, hint: Mapping[int, str] | None = None) -> Document:
    """The JSON object of a 200 or 201 answer; any other answer leaves (:func:`refuse`)."""
    if response.status_code not in (httpx.codes.OK, httpx.codes.CREATED):
        refuse(response, hint=hint)
    try:
        found = response.json()
    except ValueError:
        found = None
    if not isinstance(found, dict):
        fail(f"{response.request.url} did not answer with a JSON object", EXIT_UNAVAILABLE)
    return found


def exit_code_of(status: int) -> int:
    """The exit code for an HTTP refusal: what to do about it (see ``EXIT_CODES``)."""
    if status == httpx.codes.TOO_MANY_REQUESTS or status >= 500:
        return EXIT_UNAVAILABLE
    if status in (httpx.codes.BAD_REQUEST, httpx.codes.NOT_FOUND, httpx.codes.UNPROCESSABLE_ENTITY):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def problem_lines(response: httpx.Response, hint: str | None = None) -> list[str]:
    """What a refusal says, for people: the status and the detail on one line, then one line
    per field the problem document names (``errors``)."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    problem = problem if isinstance(problem, dict) else {}
    status = f"{response.status_code} {response.reason_phrase}".strip()
    request = response.request
    head = f"{request.method} {request.url.copy_with(query=None)} answered {status}"
    detail = problem.get("detail") or problem.get("title")
    if isinstance(detail, str) and detail:
        head += f": {detail}"
    if retry := response.headers.get("Retry-After"):
        head += f"; retry after {retry} s"
    if hint:
        head += f"; {hint}"
    lines = [head]
    for error in problem.get("errors") or []:
        if isinstance(error, dict):
            lines.append(f"{error.get('field', '(body)')}: {error.get('reason', '')}")
    return [" ".join(line.split()) for line in lines]


def refuse(response: httpx.Response, *, hint: Mapping[int, str] | None = None) -> NoReturn:
    """Print the refusal as ``cotn: error:`` lines on stderr and leave with its exit code."""
    for line in problem_lines(response, (hint or {}).get(response.status_code)):
        typer.echo(f"cotn: error: {line}", err=True)
    raise typer.Exit(exit_code_of(response.status_code))


def print_json(document: Document) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


# -- rendering ----------------------------------------------------------------------------------


def table(title: str, columns: Sequence[str]) -> Table:
    """A plain table; a column name ending in ``>`` is right-justified (numbers). Text that
    does not fit folds onto the next line: an id cut to "cumb…" identifies nothing."""
    shown = Table(
        title=Text(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    for name in columns:
        if name.endswith(">"):  # as wide as the header's longest word, or "100 %"
            header = name.removesuffix(">")
            width = max(5, *(len(word) for word in header.split()))
            shown.add_column(header, justify="right", min_width=width, max_width=width)
        else:
            shown.add_column(name, overflow="fold", min_width=max(len(name), 7))
    return shown


def cell(value: Any) -> Text:
    """A value as plain text (never markup); ``-`` for none."""
    if value is None or value == "":
        return Text("-", style="dim")
    return Text(str(value))


def day(stamp: str | None) -> Text:
    """An RFC 3339 time as its date and minute, UTC as the aggregator gives it."""
    if not stamp:
        return Text("-", style="dim")
    return Text(stamp[:16].replace("T", " "))


def percent(rate: float | None) -> Text:
    if rate is None:
        return Text("-", style="dim")
    style = "green" if rate >= 0.999 else "yellow" if rate >= 0.5 else "red"
    return Text(f"{rate * 100:.0f} %", style=style)


def count(value: int, style: str = "") -> Text:
    return Text(str(value), style=style if value else "dim")


def none_line(what: str) -> Text:
    return Text(f"{what}: none", style="dim")


def completeness_table(
    rows: Sequence[Document], title: str = "Returns by authority and period"
) -> Table:
    shown = table(
        title,
        [
            "authority",
            "period",
            "owed>",
            "on time>",
            "late>",
            "missing>",
            "pending>",
            "extra>",
            "rate>",
            "timely>",
        ],
    )
    shown.caption = "rate: received of those due; timely: received on time of those due"
    shown.caption_justify = "left"
    for r in rows:
        shown.add_row(
            cell(r["authority"]),
            cell(r["period"]),
            count(r["expected"]),
            count(r["on_time"], "green"),
            count(r["late"], "yellow"),
            count(r["missing"], "bold red"),
            count(r["pending"]),
            count(r["extra"]),
            percent(r["completeness"]),
            percent(r["timeliness"]),
        )
    return shown


def silent_table(rows: Sequence[Document]) -> Table:
    shown = table(
        "Silent reporters: the newest due return missing",
        ["authority", "kind", "obligation", "column", "since", "periods missing"],
    )
    for s in rows:
        shown.add_row(
            cell(s["authority"]),
            cell(s["kind"]),
            cell(s["obligation"]),
            cell(s["column"]),
            cell(s["since"]),
            cell(", ".join(s["periods"])),
        )
    return shown


def render_reporting(doc: Document) -> Group:
    """``GET /v1/reporting``: completeness per authority and period, then the silent ones."""
    parts: list[RenderableType] = [
        Text(f"Reporting at {str(doc['generated_at'])[:19].replace('T', ' ')} UTC", style="bold")
    ]
    rows = doc["completeness"]
    parts.append(completeness_table(rows) if rows else none_line("Returns owed"))
    parts.append(silent_table(doc["silent"]) if doc["silent"] else none_line("Silent reporters"))
    return Group(*parts)


def owed_table(title: str, rows: Sequence[Document], received: bool = False) -> Table:
    columns = ["kind", "obligation", "column", "period", "due"] + (["received"] if received else [])
    shown = table(title, columns)
    for o in rows:
        values = [cell(o["kind"]), cell(o["obligation"]), cell(o["column"]), cell(o["period"])]
        values.append(cell(o["due"]))
        if received:
            values.append(day(o["received_at"]))
        shown.add_row(*values)
    return shown


def returned_table(rows: Sequence[Document], title: str = "Returned for correction") -> Table:
    shown = table(title, ["return", "value", "returned by", "at", "reason"])
    for r in rows:
        review = r.get("review") or {}
        shown.add_row(
            cell(r["target"]),
            cell(r.get("value")),
            cell(review.get("by")),
            day(review.get("at")),
            cell(review.get("reason")),
        )
    return shown


def render_authority(doc: Document) -> Group:
    """``GET /v1/reporting/{authority}``: what it owes next, what was late, what is missing,
    what the office returned and why, its silences and its completeness."""
    at = str(doc["generated_at"])[:19].replace("T", " ")
    parts: list[RenderableType] = [
        Text(f"{doc['name']} ({doc['authority']}): returns at {at} UTC", style="bold")
    ]
    owed = [
        ("Owed next", doc["next"], False),
        ("Missing: past due, nothing received", doc["missing"], False),
        ("Late: received after the due day", doc["late"], True),
    ]
    for title, rows, received in owed:
        parts.append(owed_table(title, rows, received) if rows else none_line(title.split(":")[0]))
    returned = doc["returned"]
    parts.append(returned_table(returned) if returned else none_line("Returned for correction"))
    parts.append(silent_table(doc["silent"]) if doc["silent"] else none_line("Silent"))
    rows = doc["completeness"]
    parts.append(
        completeness_table(rows, "Completeness by period") if rows else none_line("Completeness")
    )
    return Group(*parts)


# -- the command --------------------------------------------------------------------------------


def reporting(
    authority: Annotated[
        str | None,
        typer.Option(
            metavar="AUTHORITY",
            help="One authority. Alone, its own page: what it owes next (due dates), what was "
            "late, what is missing, what the office returned and why. With --column or "
            "--period, a filter of the summary.",
        ),
    ] = None,
    column: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="Only this column's returns.")
    ] = None,
    period: Annotated[
        str | None,
        typer.Option(metavar="PERIOD", help="Only this period, e.g. 2025-Q1, 2025-07 or 2025."),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Show how complete and timely the returns are: per authority and period (expected, on
    time, late, missing, pending, extra, completeness and timeliness), then the silent
    reporters."""
    if authority is not None and column is None and period is None:
        response = call("GET", url, f"/v1/reporting/{quote(authority, safe='')}", timeout=timeout)
        doc = document_of(response)
        render = render_authority
    else:
        params = {"authority": authority, "column": column, "period": period}
        doc = document_of(call("GET", url, "/v1/reporting", params=params, timeout=timeout))
        render = render_reporting
    if as_json:
        print_json(doc)
        return
    Console().print(render(doc))
