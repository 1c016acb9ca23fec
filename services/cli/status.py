"""``cotn status``: the programme board from the aggregator's read API, in the terminal.

The board is read from ``GET /v1/programme`` as plain JSON (the HTTP contract), never by
importing the aggregator. Every text that came from an event or the catalogue (notes,
reasons, titles) is rendered as plain :class:`rich.text.Text`, so a ``[bold]`` in a note
stays those characters and never becomes markup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from services.cli.common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, fail
from shared.instants import instant_of

DEFAULT_URL = "http://127.0.0.1:8000"
RAG_STYLE = {"green": "bold green", "amber": "bold yellow", "red": "bold red"}
STATUS_LABELS = {
    "completed": "done",
    "in_progress": "in progress",
    "at_risk": "at risk",
    "blocked": "blocked",
    "not_started": "to do",
}
"""Milestone statuses in the order the board lists their counts, with short labels."""

Board = Mapping[str, Any]


class BoardUnavailable(RuntimeError):
    """The aggregator could not be asked, or did not answer with a board."""


def register(parent: typer.Typer) -> None:
    """Add ``cotn status`` to the ``cotn`` app."""
    parent.command("status")(status)


def programme_url(url: str) -> str:
    return url.rstrip("/") + "/v1/programme"


def fetch_board(url: str, timeout: float = 5.0, view: Mapping[str, str] | None = None) -> Board:
    """GET the board from the aggregator at ``url`` (``view``: its as_at and known_at
    parameters); one clear reason if that fails."""
    endpoint = programme_url(url)
    try:
        response = httpx.get(endpoint, timeout=timeout, params=dict(view or {}))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        fail(f"invalid --url {url}: {exc}", EXIT_BAD_INPUT)
    except httpx.TransportError as exc:
        raise BoardUnavailable(f"cannot reach {endpoint}: {exc!s}") from exc
    return board_of(response)


def board_of(response: httpx.Response) -> Board:
    """The board in a read-API answer, or why there is none."""
    if response.status_code != 200:
        raise BoardUnavailable(
            f"{response.request.url} answered {response.status_code} {response.reason_phrase}"
        )
    try:
        board = response.json()
    except ValueError as exc:
        raise BoardUnavailable(f"{response.request.url} did not answer with JSON") from exc
    if not isinstance(board, dict) or "columns" not in board:
        raise BoardUnavailable(f"{response.request.url} did not answer with a programme board")
    return board


def _number(value: float | None, unit: str = "") -> Text:
    if value is None:
        return Text("-", style="dim")
    # Thousands keep every digit (118,700 jobs); small figures keep four significant ones.
    shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return Text(shown + (f" {unit}" if unit else ""))


def _when(stamp: str | None) -> str:
    if not stamp:
        return "never"
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d")


def _counts(counts: Mapping[str, int]) -> Text:
    ordered = [*STATUS_LABELS, *(s for s in counts if s not in STATUS_LABELS)]
    parts = [f"{counts[s]} {STATUS_LABELS.get(s, s)}" for s in ordered if counts.get(s)]
    return Text(", ".join(parts) or "-")


def _reasons(proposal: Board, compact: bool) -> Text:
    """Each rule with its detail, or (compact) each rule once, with what it is about."""
    reasons = proposal.get("reasons", [])
    text = Text()
    if compact:
        by_rule: dict[str, list[Board]] = {}
        for reason in reasons:
            by_rule.setdefault(reason["rule"], []).append(reason)
        for i, (rule, same) in enumerate(by_rule.items()):
            about = same[0].get("milestone") or same[0].get("kpi")
            text.append(", " if i else "")
            text.append(rule, style=RAG_STYLE.get(same[0]["rag"], ""))
            text.append(f" x{len(same)}" if len(same) > 1 else f": {about}" if about else "")
        return text
    for i, reason in enumerate(reasons):
        text.append("\n" if i else "")
        text.append(reason["rule"], style=RAG_STYLE.get(reason["rag"], ""))
        text.append(f": {reason['detail']}")
    return text


# Verdict columns keep a fixed width so no terminal cuts them: "AMBER", "STALLED", "no report".
FIXED_WIDTH = {"RAG": 5, "stalled": 10, "on track": 9}
NARROW_BELOW = 140
"""Terminals narrower than this get the proposals as a list: six table columns would cut
ids, sources and headers mid-word at 80 or 120 columns."""


def _table(title: str, columns: list[str], ratios: list[int], compact: bool) -> Table:
    """A board table; a compact one keeps every cell on one line.

    A column name ending in ``>`` is right-justified (numbers).
    """
    table = Table(
        title=Text(title),
        title_justify="left",
        expand=True,
        box=box.SIMPLE_HEAD,
        show_lines=not compact,
        padding=(0, 1),
    )
    for name, ratio in zip(columns, ratios, strict=True):
        table.add_column(
            name.removesuffix(">"),
            justify="right" if name.endswith(">") else "left",
            ratio=None if name in FIXED_WIDTH else ratio,
            # For a ratio column the width is its least: a header is never broken
            # ("milestones", not "mileston" over "es").
            width=FIXED_WIDTH.get(name, len(name.removesuffix(">"))),
            no_wrap=compact,
            overflow="ellipsis" if compact else "fold",
        )
    return table


def _stalled(proposal: Board, compact: bool) -> Text:
    cell = Text("STALLED", style="bold red") if proposal["stalled"] else Text("no")
    if not compact:
        last = proposal["last_progress"] if proposal["has_progress"] else None
        cell.append(f"\n{_when(last)}", style="dim")
    return cell


def _newest_note(proposal: Board) -> Text | None:
    """The newest note a partner sent, with who and when."""
    reported = [m for m in proposal.get("milestones", []) if m.get("note") and m.get("updated_at")]
    if not reported:
        return None
    newest = max(reported, key=lambda m: datetime.fromisoformat(m["updated_at"]))
    return Text(
        f'"{newest["note"]}" ({newest["source"]}, {_when(newest["updated_at"])})',
        style="dim italic",
    )


def _proposal(proposal: Board, compact: bool) -> Text:
    """Id and title; in full, the newest note a partner sent, with who and when."""
    cell = Text(f"{proposal['id']} {proposal['title']}")
    note = None if compact else _newest_note(proposal)
    if note is not None:
        cell.append("\n")
        cell.append_text(note)
    return cell


def proposal_table(column: Board, compact: bool = False) -> Table:
    """One column's proposals: RAG, stall, milestones, overdue ones and the reasons."""
    table = _table(
        f"{column['title']} ({column['id']})",
        ["proposal", "RAG", "stalled", "milestones", "overdue", "reasons"],
        [4, 1, 2, 3, 3, 6],
        compact,
    )
    for p in column["proposals"]:
        table.add_row(
            _proposal(p, compact),
            Text(p["rag"].upper(), style=RAG_STYLE.get(p["rag"], "")),
            _stalled(p, compact),
            _counts(p["milestone_counts"]),
            Text(", ".join(p["overdue"]) or "-", style="red" if p["overdue"] else "dim"),
            _reasons(p, compact),
        )
    return table


def proposal_list(column: Board, compact: bool = False) -> Group:
    """One column's proposals for a narrow terminal: a block per proposal (compact: a line)
    whose lines wrap at spaces only, so ids, sources and rules stay whole words."""
    blocks: list[RenderableType] = [Text(f"{column['title']} ({column['id']})", style="italic")]
    for p in column["proposals"]:
        head = Text("" if compact else "\n")
        head.append(p["rag"].upper(), style=RAG_STYLE.get(p["rag"], ""))
        head.append("  ")
        head.append_text(_proposal(p, compact=True))
        if p["stalled"]:
            head.append("  STALLED", style="bold red")
        if compact:
            if p["overdue"]:
                head.append(f"  overdue: {', '.join(p['overdue'])}", style="red")
            if p.get("reasons"):
                head.append("  ").append_text(_reasons(p, compact=True))
            blocks.append(_indent(head))
            continue
        last = p["last_progress"] if p["has_progress"] else None
        head.append(f"  last progress {_when(last)}", style="dim")
        blocks.append(head)
        blocks.append(Text("  milestones: ").append_text(_counts(p["milestone_counts"])))
        if p["overdue"]:
            blocks.append(Text(f"  overdue: {', '.join(p['overdue'])}", style="red"))
        reasons = _reasons(p, compact=False)
        if reasons.plain:
            blocks.append(_indent(reasons))
        note = _newest_note(p)
        if note is not None:
            blocks.append(_indent(note))
    return Group(*blocks)


def _indent(text: Text) -> Padding:
    """``text`` indented by two spaces, its wrapped lines too."""
    return Padding(text, (0, 0, 0, 2))


def _on_track(kpi: Board) -> Text:
    if kpi["on_track"] is None:
        return Text("no report", style="dim")
    return Text("yes", style="green") if kpi["on_track"] else Text("OFF", style="bold red")


def kpi_table(kpis: list[Board], compact: bool = False) -> Table:
    """Every KPI: latest actual, expected on its trajectory, target, and whether on track."""
    table = _table(
        "KPIs",
        ["KPI", "actual>", "expected then>", "expected now>", "target>", "on track"],
        [5, 3, 2, 2, 3, 2],
        compact,
    )
    for k in kpis:
        actual = _number(k["actual"], k["unit"])
        if k["actual_period"]:
            actual.append(f" ({k['actual_period']})", style="dim")
        target = _number(k["target"]["value"], k["unit"])
        target.append(f" by {k['target']['date'][:4]}", style="dim")
        table.add_row(
            Text(k["title"]),
            actual,
            _number(k["expected_at_actual"]),
            _number(k["expected"]),
            target,
            _on_track(k),
        )
    return table


def kpi_lines(kpis: list[Board], compact: bool = False) -> Group:
    """Every KPI for a narrow terminal: one wrapped block each (compact: a line), whole
    words only."""
    blocks: list[RenderableType] = [Text("KPIs", style="italic")]
    for k in kpis:
        line = Text("" if compact else "\n")
        line.append_text(_on_track(k))
        line.append(f"  {k['title']}")
        figures = Text("actual ").append_text(_number(k["actual"], k["unit"]))
        if k["actual_period"]:
            figures.append(f" ({k['actual_period']})", style="dim")
        figures.append("; expected then ").append_text(_number(k["expected_at_actual"]))
        if compact:
            blocks.append(_indent(line.append(": ").append_text(figures)))
            continue
        figures.append(", now ").append_text(_number(k["expected"]))
        figures.append("; target ").append_text(_number(k["target"]["value"], k["unit"]))
        figures.append(f" by {k['target']['date'][:4]}")
        blocks.append(line)
        blocks.append(_indent(figures))
    return Group(*blocks)


def summary(board: Board) -> Group:
    """The programme's name, then how many proposals are red, amber, green and stalled and
    KPIs off track, and when it was rated: lines of their own, so that a terminal of 80
    columns never parts a count from what it counts."""
    proposals = [p for c in board["columns"] for p in c["proposals"]]
    rags = [p["rag"] for p in proposals]
    counts = Text()
    for rag in ("red", "amber", "green"):
        counts.append(f"{rags.count(rag)} {rag}  ", style=RAG_STYLE[rag])
    counts.append(f"{sum(p['stalled'] for p in proposals)} stalled  ")
    off = sum(k["on_track"] is False for k in board["kpis"])
    counts.append(f"{off} KPI off trajectory")
    return Group(
        Text(board.get("name", "Programme"), style="bold"),
        counts,
        Text(f"rated at {board['generated_at'][:19].replace('T', ' ')} UTC", style="dim"),
    )


def render_board(
    board: Board, note: Text | None = None, compact: bool = False, narrow: bool = False
) -> Group:
    """The whole board: summary, a table (or, ``narrow``, a list) per column, the KPIs (and
    a note, if any)."""
    parts: list[RenderableType] = [summary(board)]
    if narrow:
        parts += [proposal_list(c, compact) for c in board["columns"]]
        parts.append(kpi_lines(board["kpis"], compact))
    else:
        parts += [proposal_table(c, compact) for c in board["columns"]]
        parts.append(kpi_table(board["kpis"], compact))
    if note is not None:
        parts.append(note)
    return Group(*parts)


def fit_board(console: Console, board: Board, note: Text | None = None) -> Group:
    """The full board if it fits the terminal's height, else the compact one (for live views);
    a list, not tables, in a narrow terminal."""
    narrow = console.width < NARROW_BELOW
    full = render_board(board, note, narrow=narrow)
    if len(console.render_lines(full, pad=False)) < console.height:
        return full
    return render_board(board, note, compact=True, narrow=narrow)


def status(
    url: Annotated[str, typer.Option(help="Base URL of the aggregator.")] = DEFAULT_URL,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the board refreshed.")] = False,
    interval: Annotated[
        float, typer.Option(min=0.5, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for an answer.")] = 5.0,
    as_at: Annotated[
        str | None,
        typer.Option(
            "--as-at",
            metavar="DATE",
            help="The board as now known for a past instant: an RFC 3339 time, or a date "
            "(its end, UTC).",
        ),
    ] = None,
    known_at: Annotated[
        str | None,
        typer.Option(
            "--known-at",
            metavar="DATE",
            help="Only what had been received by then: the board as it was shown.",
        ),
    ] = None,
) -> None:
    """Show the programme board: RAG, stalls, overdue milestones and KPIs, per column."""
    view = {
        name: instant(value, option)
        for name, value, option in (
            ("as_at", as_at, "--as-at"),
            ("known_at", known_at, "--known-at"),
        )
        if value is not None
    }
    try:
        board = fetch_board(url, timeout, view) if view else fetch_board(url, timeout)
    except BoardUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    console = Console()
    if view:
        shown = ", ".join(f"{name.replace('_', ' ')} {board.get(name)}" for name in view)
        console.print(Text(f"Board {shown}", style="bold"))
    if not watch:
        console.print(render_board(board, narrow=console.width < NARROW_BELOW))
        return
    try:
        _watch(console, url, board, interval, timeout, view)
    except KeyboardInterrupt:
        return


def instant(value: str, option: str) -> str:
    """An option's instant as the read API takes it: RFC 3339 as given, or a date's end
    (UTC; now, for today): :func:`shared.instants.instant_of`."""
    try:
        return instant_of(value)
    except ValueError:
        fail(
            f"invalid {option} {value!r}: give a date (2026-03-01) or an RFC 3339 time",
            EXIT_BAD_INPUT,
        )


def _watch(
    console: Console,
    url: str,
    board: Board,
    interval: float,
    timeout: float,
    view: Mapping[str, str] | None = None,
) -> None:
    """Refresh the board in place; a failed refresh keeps the last board and says why."""
    with Live(fit_board(console, board), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            note = None
            try:
                board = fetch_board(url, timeout, view) if view else fetch_board(url, timeout)
            except BoardUnavailable as exc:
                note = Text(f"last refresh failed: {exc}", style="yellow")
            live.update(fit_board(console, board, note), refresh=True)
