"""``cotn post``: send an event or a batch to a column service, as an authority system does."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from services.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    CatalogueOption,
    fail,
    open_catalogue,
    unknown,
)
from shared.catalogue import DEFAULT_CATALOGUE, Catalogue

BASE_PORT = 8000
"""Column services listen on BASE_PORT + 1, + 2, ... in the catalogue's column order."""
EVENT_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
TOKEN_ENV = "COTN_TOKEN"


_EXIT_CODES = (
    "Exit codes: 0 accepted (202); 1 refused by the service; 2 bad input (file, JSON, "
    "column, URL); 3 service unreachable or unavailable: send the same events again later."
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn post`` to the ``cotn`` app."""
    parent.command("post", epilog=_EXIT_CODES)(post)


def post(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-",
            help="JSON file with one event (an object) or a batch (an array); - reads stdin.",
        ),
    ],
    column: Annotated[
        str,
        typer.Option(
            "--column", "-c", help="Column whose service takes the events, e.g. collaboration."
        ),
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            "-t",
            envvar=TOKEN_ENV,
            show_default=False,
            help="Bearer token of the sending authority, from `cotn token create`.",
        ),
    ],
    url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the column service. Default: http://127.0.0.1:8001, 8002, 8003 "
            "for the first, second and third column of the catalogue."
        ),
    ] = None,
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for the service's answer.")
    ] = 10.0,
) -> None:
    """Post one CloudEvent or a batch to a column service's /v1/events.

    An object is sent as application/cloudevents+json, an array as
    application/cloudevents-batch+json. The service's JSON answer is printed on stdout.
    """
    # Resolved even when --url is given, so an unknown column is refused either way.
    column_url = default_url(open_catalogue(catalogue), column)
    body = _read(file)
    content_type = content_type_of(_decode(body, _name(file)), _name(file))
    base_url = url or column_url
    response = _send(
        base_url.rstrip("/") + "/v1/events", body, content_type, token, timeout, column
    )
    _report(response)


def default_url(catalogue: Catalogue, column: str) -> str:
    """The loopback URL of ``column``'s service on one machine."""
    ids = [c.id for c in catalogue.columns]
    if column not in ids:
        unknown("column", column, ids)
    return f"http://127.0.0.1:{BASE_PORT + ids.index(column) + 1}"


def content_type_of(document: Any, name: str) -> str:
    """The CloudEvents content type for a decoded document: one event or a batch."""
    if isinstance(document, dict):
        return EVENT_CONTENT_TYPE
    if isinstance(document, list):
        return BATCH_CONTENT_TYPE
    fail(f"{name} must hold a JSON object (one event) or an array (a batch)", EXIT_BAD_INPUT)


def _name(file: str) -> str:
    return "stdin" if file == "-" else file


def _read(file: str) -> bytes:
    if file == "-":
        return typer.get_binary_stream("stdin").read()
    try:
        with open(file, "rb") as fh:
            return fh.read()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", EXIT_BAD_INPUT)


def _decode(body: bytes, name: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        fail(f"{name} is not valid JSON: {exc}", EXIT_BAD_INPUT)


def _send(
    endpoint: str, body: bytes, content_type: str, token: str, timeout: float, column: str
) -> httpx.Response:
    # The bytes are sent as read, so the service sees exactly what the file holds.
    headers = {
        "Content-Type": content_type,
        "Authorization": f"Bearer {token}",
        # A --url of another column's service answers 421 instead of taking the events.
        "Cotn-Column": column,
        "Accept": "application/json, application/problem+json",
    }
    try:
        return httpx.post(endpoint, content=body, headers=headers, timeout=timeout)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        fail(f"invalid URL {endpoint}: {exc}", EXIT_BAD_INPUT)
    except httpx.TimeoutException:
        fail(f"{endpoint} did not answer within {timeout:g} s", EXIT_UNAVAILABLE)
    except httpx.TransportError as exc:
        fail(f"cannot reach {endpoint}: {str(exc) or type(exc).__name__}", EXIT_UNAVAILABLE)


def _report(response: httpx.Response) -> None:
    """Print the answer; leave non-zero unless the service accepted (202)."""
    answer = _json_or_text(response)
    if answer:
        typer.echo(answer)
    if response.status_code == httpx.codes.ACCEPTED:
        return
    status = f"{response.status_code} {response.reason_phrase}".strip()
    reason = _reason(response)
    retry = response.headers.get("Retry-After")
    message = f"{response.request.url} answered {status}" + (f": {reason}" if reason else "")
    if retry:
        message += f"; retry after {retry} s with the same events"
    transient = response.status_code == httpx.codes.TOO_MANY_REQUESTS or response.is_server_error
    fail(message, EXIT_UNAVAILABLE if transient else EXIT_FAILED)


def _json_or_text(response: httpx.Response) -> str:
    try:
        return json.dumps(response.json(), indent=2, ensure_ascii=False)
    except ValueError:
        return response.text.strip()


def _reason(response: httpx.Response) -> str:
    """The service's own short reason: RFC 9457 ``detail`` or ``title``, where it gives one."""
    try:
        answer = response.json()
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    for key in ("detail", "title"):
        if isinstance(answer.get(key), str):
            return str(answer[key])
    return ""
