"""``cotn review``: the programme office's review queue and its reviews of returns, through
the aggregator (``GET /v1/reviews``, ``POST /v1/reviews``).

A return is a KPI return (a KPI's value for a period, from its reporter) or a completion (a
milestone reported completed). Approving a KPI return or verifying a completion locks it;
returning one asks its authority for a correction; reopening unlocks or withdraws a review.
The office token is sent to the aggregator and never printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from services.cli.common import EXIT_BAD_INPUT, fail
from services.cli.reporting import (
    EXIT_CODES,
    Document,
    JsonOption,
    TimeoutOption,
    UrlOption,
    call,
    cell,
    day,
    document_of,
    none_line,
    print_json,
    returned_table,
    table,
)
from services.cli.status import DEFAULT_URL
from shared.reviews import kpi_target, milestone_target

TOKEN_ENV = "COTN_OFFICE_TOKEN"
KPI_FIELDS = ("kpi", "period", "reporter")
COMPLETION_FIELDS = ("proposal", "milestone")


class Kind(StrEnum):
    """What a return is of: a KPI's value, or a milestone's completion."""

    kpi = "kpi"
    milestone = "milestone"


STATE_OF = {
    "approve": "approved",
    "verify": "verified",
    "return": "returned",
    "reopen": "submitted",
}

RETURN_HELP = """

Every action names the return the same way. A KPI return: KPI PERIOD REPORTER (rd-boost-gva
2025-Q1 np11). A completion: PROPOSAL MILESTONE (1a joint-position). Or its TARGET as
`cotn review list` shows it (kpi.rd-boost-gva.2025-Q1.np11, milestone.1a.joint-position).
Or options instead of arguments: --kpi K --period P --reporter R, or --proposal P
--milestone M.

A KPI return is approved, a completion verified; either may be returned or reopened, with
--reason (the authority sees it). The office token comes from --token or COTN_OFFICE_TOKEN
(cotn token create --office NAME).
"""

app = typer.Typer(
    help="The programme office's review of returns: the queue, and approve, verify, return "
    "or reopen a return. Reviews need an office token: --token or COTN_OFFICE_TOKEN.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn review ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="review")


# -- the queue ----------------------------------------------------------------------------------


def _reviewed(review: Mapping[str, Any] | None) -> Text:
    """A review in one line: what, by whom and when."""
    if not review:
        return cell(None)
    state = STATE_OF.get(str(review.get("action")), str(review.get("action")))
    return Text(f"{state} by {review.get('by')} at ").append_text(day(review.get("at")))


def waiting_table(rows: Sequence[Document]) -> Table:
    # The return is named by its target, as the review commands take it (its reporter last);
    # its event's source is the reporter, so the event is named by its id.
    shown = table("Waiting for review, oldest first", ["return", "value", "received", "event id"])
    for r in rows:
        value = r.get("value") if r["kind"] == "kpi" else "completed"
        event = r.get("event") or {}
        shown.add_row(cell(r["target"]), cell(value), day(r["received_at"]), cell(event.get("id")))
    return shown


def kept_aside_table(rows: Sequence[Document]) -> Table:
    shown = table(
        "Kept aside: accepted after the return was locked, stored, never applied",
        ["event", "type", "return", "received", "lock"],
    )
    for k in rows:
        event = k.get("event") or {}
        shown.add_row(
            cell(f"{event.get('source')} {event.get('id')}"),
            cell(k["type"]),
            cell(k["target"]),
            day(k["received_at"]),
            _reviewed(k.get("lock")),
        )
    return shown


def render_queue(doc: Document) -> Group:
    counts = doc["counts"]
    at = str(doc["generated_at"])[:19].replace("T", " ")
    head = Text(
        f"Review queue at {at} UTC: {counts['waiting']} waiting, {counts['returned']} returned, "
        f"{counts['kept_aside']} kept aside",
        style="bold",
    )
    shown = {
        "waiting": doc["waiting"],
        "returned": doc["returned"],
        "kept_aside": doc["kept_aside"],
    }
    if any(counts[name] > len(rows) for name, rows in shown.items()):
        head.append(" (more than --limit: not all shown)", style="yellow")
    parts: list[RenderableType] = [head]
    parts.append(waiting_table(doc["waiting"]) if doc["waiting"] else none_line("Waiting"))
    parts.append(returned_table(doc["returned"]) if doc["returned"] else none_line("Returned"))
    aside = doc["kept_aside"]
    parts.append(kept_aside_table(aside) if aside else none_line("Kept aside"))
    return Group(*parts)


@app.command("list", epilog=EXIT_CODES)
def list_queue(
    column: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="Only this column's returns.")
    ] = None,
    authority: Annotated[
        str | None, typer.Option(metavar="AUTHORITY", help="Only this authority's returns.")
    ] = None,
    kind: Annotated[
        Kind | None,
        typer.Option(
            help="Only KPI returns or only completions.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many of each list.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Show the review queue: returns waiting for review, returned for correction (with the
    reason), and events kept aside by a lock (with the lock)."""
    params = {
        "column": column,
        "authority": authority,
        "kind": kind.value if kind else None,
        "limit": limit,
    }
    doc = document_of(call("GET", url, "/v1/reviews", params=params, timeout=timeout))
    if as_json:
        print_json(doc)
        return
    Console().print(render_queue(doc))


# -- reviews ------------------------------------------------------------------------------------


def return_args(metavar: str) -> Any:
    return typer.Argument(metavar=metavar, help="The return: see above.", show_default=False)


AnyReturn = Annotated[
    list[str] | None, return_args("KPI PERIOD REPORTER | PROPOSAL MILESTONE | TARGET")
]
KpiReturn = Annotated[list[str] | None, return_args("KPI PERIOD REPORTER | TARGET")]
Completion = Annotated[list[str] | None, return_args("PROPOSAL MILESTONE | TARGET")]
KpiOption = Annotated[str | None, typer.Option(metavar="KPI", help="A KPI return's KPI.")]
PeriodOption = Annotated[str | None, typer.Option(metavar="PERIOD", help="Its period.")]
ReporterOption = Annotated[
    str | None, typer.Option(metavar="AUTHORITY", help="The authority that reported it.")
]
ProposalOption = Annotated[
    str | None, typer.Option(metavar="PROPOSAL", help="A completion's proposal.")
]
MilestoneOption = Annotated[str | None, typer.Option(metavar="MILESTONE", help="Its milestone.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        envvar=TOKEN_ENV,
        show_default=False,
        show_envvar=True,
        help="An office token (cotn token create --office NAME); never printed.",
    ),
]


def reason_option(needed: bool) -> Any:
    said = (
        "Required: why, for the authority to read." if needed else "Optional: why, for the record."
    )
    return typer.Option(metavar="TEXT", help=said)


def return_of(action: str, given: Sequence[str], named: Mapping[str, str | None]) -> dict[str, str]:
    """The return a review is of, from arguments or options (not both), checked for its
    form; leaves with one line naming what is wrong."""
    options = {k: v for k, v in named.items() if v is not None}
    if given and options:
        fail(
            f"name the return by arguments or by options, not both (got {len(given)} argument(s) "
            f"and {', '.join('--' + k for k in options)})",
            EXIT_BAD_INPUT,
        )
    if len(given) == 1:
        parts = given[0].split(".")
        if parts[0] == "kpi" and len(parts) == 4:
            given = parts[1:]
        elif parts[0] == "milestone" and len(parts) == 3:
            given = parts[1:]
        else:
            fail(
                f"{given[0]!r} is not a return: kpi.<kpi>.<period>.<reporter> or "
                "milestone.<proposal>.<milestone> (or give its parts)",
                EXIT_BAD_INPUT,
            )
    if given:
        if len(given) not in (2, 3):
            fail(
                f"{len(given)} arguments: give KPI PERIOD REPORTER, PROPOSAL MILESTONE or TARGET",
                EXIT_BAD_INPUT,
            )
        fields = KPI_FIELDS if len(given) == 3 else COMPLETION_FIELDS
        options = dict(zip(fields, given, strict=True))
    kpi_given = [f for f in KPI_FIELDS if f in options]
    completion_given = [f for f in COMPLETION_FIELDS if f in options]
    if kpi_given and completion_given:
        fail(
            "a review is of a KPI return (--kpi, --period, --reporter) or a completion "
            "(--proposal, --milestone), not both",
            EXIT_BAD_INPUT,
        )
    if not kpi_given and not completion_given:
        fail("name the return: KPI PERIOD REPORTER, PROPOSAL MILESTONE or TARGET", EXIT_BAD_INPUT)
    fields = KPI_FIELDS if kpi_given else COMPLETION_FIELDS
    missing = [f"--{f}" for f in fields if f not in options]
    if missing:
        what = "a KPI return" if kpi_given else "a completion"
        fail(
            f"{', '.join(missing)} missing: {what} needs {', '.join('--' + f for f in fields)}",
            EXIT_BAD_INPUT,
        )
    if action == "approve" and not kpi_given:
        fail(
            "a completion is verified, not approved: cotn review verify PROPOSAL MILESTONE",
            EXIT_BAD_INPUT,
        )
    if action == "verify" and kpi_given:
        fail(
            "a KPI return is approved, not verified: cotn review approve KPI PERIOD REPORTER",
            EXIT_BAD_INPUT,
        )
    return {f: options[f] for f in fields}


def target_of(ref: Mapping[str, str]) -> str:
    if "kpi" in ref:
        return kpi_target(ref["kpi"], ref["period"], ref["reporter"])
    return milestone_target(ref["proposal"], ref["milestone"])


def review(
    action: str,
    given: Sequence[str] | None,
    named: Mapping[str, str | None],
    *,
    reason: str | None,
    token: str | None,
    url: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Make one review through ``POST /v1/reviews`` and say where the return now stands."""
    ref = return_of(action, given or [], named)
    if action in ("return", "reopen") and not (reason and reason.strip()):
        fail(f"--reason is required to {action}: the authority sees it", EXIT_BAD_INPUT)
    if not token:
        fail(
            f"an office token is needed: --token or {TOKEN_ENV} (cotn token create --office NAME)",
            EXIT_BAD_INPUT,
        )
    body: dict[str, str] = {"action": action, **ref}
    if reason:
        body["reason"] = reason
    response = call("POST", url, "/v1/reviews", body=body, token=token, timeout=timeout)
    hint = {
        401: f"give an office token with --token or {TOKEN_ENV} (cotn token create --office NAME)"
    }
    doc = document_of(response, hint=hint)
    if as_json:
        print_json(doc)
        return
    target = target_of(ref)
    made = doc.get("review") or {}
    by = f"{made.get('action')} by {made.get('by')} at {made.get('at')}"
    if response.status_code == 200:
        typer.echo(f"{target} was already {doc['state']} ({by}): nothing new was sent")
    else:
        typer.echo(f"{target} is now {doc['state']} ({by})")
    if made.get("reason"):
        typer.echo(f"reason: {made['reason']}")
    typer.echo(f"lock: {doc.get('lock') or 'none'}")
    if doc.get("stored") is False:
        typer.echo(
            "note: the aggregator had not stored the review yet when it answered; "
            "`cotn review list` shows it within seconds",
            err=True,
        )


@app.command(
    help="Approve a KPI return: it is locked." + RETURN_HELP,
    short_help="Approve a KPI return: it is locked.",
    epilog=EXIT_CODES,
)
def approve(
    ids: KpiReturn = None,
    kpi: KpiOption = None,
    period: PeriodOption = None,
    reporter: ReporterOption = None,
    reason: Annotated[str | None, reason_option(False)] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    timeout: TimeoutOption = 10.0,
) -> None:
    named = {"kpi": kpi, "period": period, "reporter": reporter}
    review(
        "approve", ids, named, reason=reason, token=token, url=url, timeout=timeout, as_json=as_json
    )


@app.command(
    help="Verify a completion: it is locked." + RETURN_HELP,
    short_help="Verify a completion: it is locked.",
    epilog=EXIT_CODES,
)
def verify(
    ids: Completion = None,
    proposal: ProposalOption = None,
    milestone: MilestoneOption = None,
    reason: Annotated[str | None, reason_option(False)] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    timeout: TimeoutOption = 10.0,
) -> None:
    named = {"proposal": proposal, "milestone": milestone}
    review(
        "verify", ids, named, reason=reason, token=token, url=url, timeout=timeout, as_json=as_json
    )


def _either(action: str) -> Callable[..., None]:
    """``return`` or ``reopen``: a KPI return or a completion, with a reason."""

    def command(
        ids: AnyReturn = None,
        kpi: KpiOption = None,
        period: PeriodOption = None,
        reporter: ReporterOption = None,
        proposal: ProposalOption = None,
        milestone: MilestoneOption = None,
        reason: Annotated[str | None, reason_option(True)] = None,
        token: TokenOption = None,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        timeout: TimeoutOption = 10.0,
    ) -> None:
        named = {
            "kpi": kpi,
            "period": period,
            "reporter": reporter,
            "proposal": proposal,
            "milestone": milestone,
        }
        review(
            action, ids, named, reason=reason, token=token, url=url, timeout=timeout,
            as_json=as_json,
        )  # fmt: skip

    return command


app.command(
    "return",
    short_help="Return a KPI return or a completion for correction (--reason).",
    help="Return a KPI return or a completion to its authority for correction (not one that "
    "is locked: reopen it first)." + RETURN_HELP,
    epilog=EXIT_CODES,
)(_either("return"))
app.command(
    "reopen",
    short_help="Reopen a reviewed return: unlocked, submitted again (--reason).",
    help="Reopen an approved, verified or returned return: its lock is released and it is "
    "submitted again." + RETURN_HELP,
    epilog=EXIT_CODES,
)(_either("reopen"))
