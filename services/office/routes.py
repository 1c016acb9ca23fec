"""The office board's pages, live stream, login and probes, on one router.

Pages read the aggregator over HTTP (:mod:`services.office.client`); the programme and
proposal pages and their live streams take the poller's latest board, so a page view costs
one render, not one more read of the whole board. Unknown query parameters are refused
(422, named), as the read API does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.office import views
from services.office.access import (
    CSRF_FIELD,
    csrf_ok,
    csrf_token,
    may_read,
    safe_next,
    sign_in,
    sign_out,
    signed_in,
)
from services.office.charts import kpi_chart
from services.office.client import AggregatorUnavailable, Download, NotFound, UnknownQuery
from services.office.live import Snapshot
from shared.instants import instant_of
from shared.kinds import KINDS

if TYPE_CHECKING:
    from services.office.app import Office

TEMPLATES = Path(__file__).parent / "templates"
KEEP_ALIVE_SECONDS = 15.0
TEXT_TTL_SECONDS = 300.0
HISTORY_TTL_SECONDS = 30.0
PAGE_SIZES = (25, 50, 100)
EXPORT_FORMATS = {"csv": "CSV (a spreadsheet)", "json": "JSON"}
"""The GMPP-style return's formats: the aggregator's ``gmpp.csv`` and ``gmpp.json``."""
VIEW_FIELDS = ("as_at", "known_at")
"""The as-at picker's fields: a date (its end, UTC; now for today) or an RFC 3339 time."""
SECURITY_HEADERS = {
    # Scripts only from this site; pygal's SVG carries its own <style>, hence inline styles.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def environment() -> jinja2.Environment:
    """Jinja with autoescape on for every template: event text is always escaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        proposal_tag=views.proposal_tag,
        kpi_tag=views.kpi_tag,
        status_tag=views.status_tag,
        rag_tag=views.rag_tag,
        event_filter=views.event_filter,
        audit_link=views.audit_link,
        lag_label=views.lag_label,
        CHANGE_LABEL=views.CHANGE_LABEL,
        event_summary=views.event_summary,
        STATUS_LABEL=views.STATUS_LABEL,
        milestone_tag=views.milestone_tag,
        approval_tag=views.approval_tag,
        completion_summary=views.completion_summary,
        owed_label=views.owed_label,
        return_label=views.return_label,
    )
    env.filters.update(when=views.when, number=views.number)
    return env


def build_router(office: Office) -> APIRouter:
    """Every route of the office board."""
    router = APIRouter()
    env = environment()
    settings = office.settings

    def render(
        request: Request, name: str, page: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        body = env.get_template(name).render(
            request=request,
            csrf_field=CSRF_FIELD,
            csrf=csrf_token(request),
            signed_in=signed_in(request),
            page=page,
            aggregator=settings.aggregator,
            **context,
        )
        office.metrics.pages.labels(page, str(status)).inc()
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def problem(request: Request, page: str, status: int, title: str, detail: str) -> HTMLResponse:
        return render(request, "error.html", page, status, title=title, detail=detail)

    def gate(request: Request, page: str, known: tuple[str, ...] = ()) -> Response | None:
        """A login redirect, or a 422 naming unknown query parameters; None to go on."""
        if not may_read(request, settings.development):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                "/login?" + urlencode({"next": target}), status_code=303, headers=SECURITY_HEADERS
            )
        unknown = sorted(set(request.query_params) - set(known))
        if unknown:
            return problem(
                request,
                page,
                422,
                "Unknown query parameter",
                f"This page takes no query parameter {', '.join(unknown)}"
                + (f" (it takes {', '.join(known)})" if known else ""),
            )
        return None

    def picked(request: Request) -> dict[str, str]:
        """The as-at picker's non-blank values (none: the live board)."""
        return {
            name: value.strip()
            for name in VIEW_FIELDS
            if (value := request.query_params.get(name, "")).strip()
        }

    def view_of(request: Request) -> tuple[dict[str, str], dict[str, str]] | str:
        """The as-at picker's values as given (for the form and the banner) and as instants
        for the aggregator; or why they cannot be used."""
        given = picked(request)
        try:
            return given, {name: instant_of(value) for name, value in given.items()}
        except ValueError:
            named = ", ".join(f"{n.replace('_', ' ')} {v!r}" for n, v in given.items())
            return f"{named}: give a date (2026-03-01) or an RFC 3339 time"

    def picker(request: Request, given: dict[str, str]) -> dict[str, Any]:
        """The as-at form's context: values, today (the latest date it takes), the banner."""
        return {
            "view": given,
            "view_banner": views.view_banner(given) if given else None,
            "live_path": request.url.path,
            "today": datetime.now(UTC).date().isoformat(),
        }

    async def past(
        request: Request,
        page: str,
        read: Callable[[dict[str, str]], Any],
        missing: tuple[str, str] = ("Not found", ""),
    ) -> tuple[dict[str, str], dict[str, str], Any] | Response:
        """For an as-at view: the picked values, their instants and what ``read`` answered
        for them; a page saying why not for bad values or no answer (``missing``: the title
        and detail of a 404)."""
        parsed = view_of(request)
        if isinstance(parsed, str):
            return problem(request, page, 422, "These dates cannot be used", parsed)
        given, instants = parsed
        try:
            return given, instants, await read(instants)
        except UnknownQuery as exc:  # the aggregator refuses a future instant, say
            return problem(request, page, 422, "These dates cannot be used", str(exc))
        except NotFound as exc:
            return problem(request, page, 404, missing[0], missing[1] or str(exc))
        except AggregatorUnavailable as exc:
            return problem(request, page, 503, "No data", str(exc))

    def past_board_context(board: Mapping[str, Any], given: dict[str, str]) -> dict[str, Any]:
        """A board read for an as-at view: never stale, never live; its links keep the view."""
        return {
            "view_query": "?" + urlencode(given),
            "board": board,
            "summary": views.summary(board),
            "stale": False,
            "error": None,
            "read_at": datetime.now(UTC),
            "version": 0,
        }

    def board_context(snapshot: Snapshot) -> dict[str, Any]:
        board = snapshot.board
        return {
            "board": board,
            "summary": views.summary(board) if board else None,
            "stale": office.watcher.stale(snapshot),
            "error": snapshot.error,
            "read_at": (
                datetime.fromtimestamp(snapshot.read_at_wall, UTC)
                if snapshot.read_at_wall
                else None
            ),
            "version": snapshot.version,
            "view_query": "",
        }

    @router.get("/", include_in_schema=False)
    async def programme(request: Request) -> Response:
        if (refused := gate(request, "programme", VIEW_FIELDS)) is not None:
            return refused
        if picked(request):
            read = await past(request, "programme", office.aggregator.programme)
            if isinstance(read, Response):
                return read
            given, _, board = read
            return render(
                request,
                "programme.html",
                "programme",
                200,
                title=None,
                live_url=None,
                **past_board_context(board, given),
                **picker(request, given),
            )
        snapshot = await office.watcher.fresh()
        context = board_context(snapshot)
        return render(
            request,
            "programme.html",
            "programme",
            200,
            title=None,
            live_url=f"/live/programme?after={snapshot.version}",
            **context,
            **picker(request, {}),
        )

    def column_context(snapshot: Snapshot, column_id: str) -> dict[str, Any] | None:
        board = snapshot.board and views.column_board(snapshot.board, column_id)
        if not board:
            return None
        return {**board_context(snapshot), "board": board, "summary": views.summary(board)}

    @router.get("/columns/{column_id}", include_in_schema=False)
    async def column(request: Request, column_id: str) -> Response:
        if (refused := gate(request, "column", VIEW_FIELDS)) is not None:
            return refused
        if picked(request):
            read = await past(request, "column", office.aggregator.programme)
            if isinstance(read, Response):
                return read
            given, _, whole = read
            cut = views.column_board(whole, column_id)
            if cut is None:
                return problem(
                    request, "column", 404, "No such column", f"There is no column {column_id}"
                )
            return render(
                request,
                "programme.html",
                "column",
                200,
                title=cut["columns"][0]["title"],
                live_url=None,
                **past_board_context(cut, given),
                **picker(request, given),
            )
        snapshot = await office.watcher.fresh()
        context = column_context(snapshot, column_id)
        if context is None:
            if snapshot.board is None:
                return problem(request, "column", 503, "No data", snapshot.error or "No board yet")
            return problem(
                request, "column", 404, "No such column", f"There is no column {column_id}"
            )
        title = context["board"]["columns"][0]["title"]
        return render(
            request,
            "programme.html",
            "column",
            200,
            title=title,
            live_url=f"/live/columns/{quote(column_id)}?after={snapshot.version}",
            **context,
            **picker(request, {}),
        )

    @router.get("/live/columns/{column_id}", include_in_schema=False)
    async def live_column(request: Request, column_id: str, after: int = 0) -> Response:
        if (refused := gate(request, "live", ("after",))) is not None:
            return refused
        return live("_board.html", lambda snap: column_context(snap, column_id), after)

    def live(
        fragment: str, context_of: Callable[[Snapshot], dict[str, Any] | None], after: int
    ) -> StreamingResponse:
        """Server-sent events: ``fragment`` re-rendered for each newer board version."""
        template = env.get_template(fragment)

        async def stream() -> AsyncIterator[str]:
            version = after
            office.metrics.live.inc()
            try:
                yield "retry: 2000\n\n"
                while True:
                    snapshot = await office.watcher.wait_newer(version, KEEP_ALIVE_SECONDS)
                    context = context_of(snapshot) if snapshot.version > version else None
                    if context is None:
                        yield ": keep-alive\n\n"
                        version = max(version, snapshot.version)
                        continue
                    version = snapshot.version
                    html = template.render(**context)
                    data = "".join(f"data: {line}\n" for line in html.splitlines())
                    yield f"event: page\nid: {version}\n{data}\n"
            finally:
                office.metrics.live.dec()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/live/programme", include_in_schema=False)
    async def live_programme(request: Request, after: int = 0) -> Response:
        if (refused := gate(request, "live", ("after",))) is not None:
            return refused
        return live("_board.html", board_context, after)

    texts: dict[str, tuple[float, dict[str, Any]]] = {}

    async def proposal_text(proposal_id: str) -> dict[str, Any]:
        """The proposal's catalogue text, read once per ``TEXT_TTL_SECONDS`` (it changes only
        with the catalogue): the page's state comes from the poller's board."""
        held = texts.get(proposal_id)
        if held is None or time.monotonic() - held[0] > TEXT_TTL_SECONDS:
            detail = await office.aggregator.proposal(proposal_id)
            held = texts[proposal_id] = (
                time.monotonic(),
                {"text": detail["text"], "annex_text": detail.get("annex_text")},
            )
        return held[1]

    def proposal_context(
        snapshot: Snapshot, proposal_id: str, text: dict[str, Any]
    ) -> dict[str, Any] | None:
        board = snapshot.board
        found = views.proposal_in(board, proposal_id) if board else None
        if board is None or found is None:
            return None
        kpis = [k for k in board["kpis"] if proposal_id in k["evidences"]]
        return {
            **board_context(snapshot),
            "proposal": {**found, **text, "kpis": kpis},
        }

    @router.get("/live/proposals/{proposal_id}", include_in_schema=False)
    async def live_proposal(request: Request, proposal_id: str, after: int = 0) -> Response:
        if (refused := gate(request, "live", ("after",))) is not None:
            return refused
        text = texts.get(proposal_id, (0.0, {"text": "", "annex_text": None}))[1]
        return live("_proposal.html", lambda snap: proposal_context(snap, proposal_id, text), after)

    async def history_of(proposal_id: str, instants: dict[str, str]) -> dict[str, Any]:
        """The proposal's history up to the view's instant (now, live), newest first; a
        history that cannot be read is a note on the page, not a failed page."""
        try:
            doc = await office.aggregator.history(proposal_id, instants)
        except (AggregatorUnavailable, UnknownQuery, NotFound) as exc:
            return {"entries": [], "error": str(exc)}
        return {"entries": list(reversed(doc["entries"])), "error": None}

    histories: dict[str, tuple[int, float, asyncio.Task[dict[str, Any]]]] = {}

    async def live_history(proposal_id: str, version: int) -> dict[str, Any]:
        """The live history, read once per board version and at most ``HISTORY_TTL_SECONDS``
        old (a backfill can change the past without changing today's board), one read shared
        by the page views that ask at once: rating a proposal's whole history costs the
        aggregator far more than a page render."""
        held = histories.get(proposal_id)
        if (
            held is None
            or held[0] != version
            or time.monotonic() - held[1] > HISTORY_TTL_SECONDS
            or (held[2].done() and held[2].result()["error"] is not None)
        ):
            task = asyncio.ensure_future(history_of(proposal_id, {}))
            held = histories[proposal_id] = (version, time.monotonic(), task)
        return await asyncio.shield(held[2])

    @router.get("/proposals/{proposal_id}", include_in_schema=False)
    async def proposal(request: Request, proposal_id: str) -> Response:
        if (refused := gate(request, "proposal", VIEW_FIELDS)) is not None:
            return refused
        if picked(request):

            async def read(instants: dict[str, str]) -> dict[str, Any]:
                return await office.aggregator.proposal(proposal_id, instants)

            missing = ("No such proposal", f"There is no proposal {proposal_id}")
            answered = await past(request, "proposal", read, missing)
            if isinstance(answered, Response):
                return answered
            given, instants, detail = answered
            return render(
                request,
                "proposal.html",
                "proposal",
                live_url=None,
                proposal=detail,
                history=await history_of(proposal_id, instants),
                **past_board_context({"columns": [], "kpis": []}, given),
                **picker(request, given),
            )
        snapshot = await office.watcher.fresh()
        if snapshot.board is None:
            return problem(
                request, "proposal", 503, "No data", snapshot.error or "No board read yet"
            )
        if views.proposal_in(snapshot.board, proposal_id) is None:
            return problem(
                request, "proposal", 404, "No such proposal", f"There is no proposal {proposal_id}"
            )
        try:
            text = await proposal_text(proposal_id)
        except NotFound:
            return problem(
                request, "proposal", 404, "No such proposal", f"There is no proposal {proposal_id}"
            )
        except (AggregatorUnavailable, UnknownQuery) as exc:
            return problem(request, "proposal", 503, "No data", str(exc))
        context = proposal_context(snapshot, proposal_id, text)
        assert context is not None
        return render(
            request,
            "proposal.html",
            "proposal",
            live_url=f"/live/proposals/{quote(proposal_id)}?after={snapshot.version}",
            history=await live_history(proposal_id, snapshot.version),
            **context,
            **picker(request, {}),
        )

    @router.get("/kpis", include_in_schema=False)
    async def kpis(request: Request) -> Response:
        if (refused := gate(request, "kpis", VIEW_FIELDS)) is not None:
            return refused
        answered = await past(request, "kpis", office.aggregator.kpis)
        if isinstance(answered, Response):
            return answered
        given, _, listed = answered
        return render(
            request,
            "kpis.html",
            "kpis",
            kpis=listed["kpis"],
            generated_at=listed["generated_at"],
            view_query="?" + urlencode(given) if given else "",
            **picker(request, given),
        )

    @router.get("/kpis/{kpi_id}", include_in_schema=False)
    async def kpi(request: Request, kpi_id: str) -> Response:
        if (refused := gate(request, "kpi", VIEW_FIELDS)) is not None:
            return refused

        async def read(instants: dict[str, str]) -> dict[str, Any]:
            return await office.aggregator.kpi(kpi_id, instants)

        answered = await past(request, "kpi", read, ("No such KPI", f"There is no KPI {kpi_id}"))
        if isinstance(answered, Response):
            return answered
        given, _, series = answered
        rows = views.kpi_periods(series)
        return render(
            request,
            "kpi.html",
            "kpi",
            kpi=series,
            rows=rows,
            chart=kpi_chart(series, rows),
            **picker(request, given),
        )

    audit_filters = ("proposal", "source", "type", "kpi", "milestone", "id", "since", "until")
    audit_fields = (*audit_filters, "limit", "cursor")

    @router.get("/audit", include_in_schema=False)
    async def audit(request: Request) -> Response:
        if (refused := gate(request, "audit", audit_fields)) is not None:
            return refused
        given = {k: v.strip() for k, v in request.query_params.items() if v.strip()}
        limit = given.get("limit", "50")
        filters = {k: v for k, v in given.items() if k in audit_filters}
        board = office.watcher.snapshot.board or {"columns": [], "kpis": []}
        proposals = [(p["id"], p["title"]) for p in views.proposals(board)]
        kpis = [(k["id"], k["title"]) for k in board.get("kpis") or ()]
        context: dict[str, Any] = {
            "filters": filters,
            "limit": limit,
            "page_sizes": PAGE_SIZES,
            "types": KINDS.types,
            "proposals": proposals,
            "kpis": kpis,
            "events": [],
            "next_url": None,
            "first_url": "/audit?" + urlencode({**filters, "limit": limit}),
            "paged": "cursor" in given,
            "error": None,
        }
        try:
            page = await office.aggregator.events(
                {**filters, "limit": limit}
                | ({"cursor": given["cursor"]} if "cursor" in given else {})
            )
        except (UnknownQuery, NotFound) as exc:  # a bad filter, or an unknown proposal
            context["error"] = str(exc)
            return render(request, "audit.html", "audit", 422, **context)
        except AggregatorUnavailable as exc:
            return problem(request, "audit", 503, "No data", str(exc))
        context["events"] = page["events"]
        if page.get("next_cursor"):
            context["next_url"] = "/audit?" + urlencode(
                {**filters, "limit": limit, "cursor": page["next_cursor"]}
            )
        return render(request, "audit.html", "audit", **context)

    reporting_filters = ("column", "authority", "period")

    def filters_of(request: Request, names: tuple[str, ...]) -> dict[str, str]:
        return {k: v.strip() for k in names if (v := request.query_params.get(k, "")).strip()}

    def board_columns() -> list[tuple[str, str]]:
        board = office.watcher.snapshot.board or {"columns": []}
        return [(c["id"], c["title"]) for c in board["columns"]]

    @router.get("/reporting", include_in_schema=False)
    async def reporting(request: Request) -> Response:
        if (refused := gate(request, "reporting", reporting_filters)) is not None:
            return refused
        filters = filters_of(request, reporting_filters)
        board = office.watcher.snapshot.board
        context: dict[str, Any] = {
            "filters": filters,
            "columns": board_columns(),
            "quiet": views.quiet_of(board, filters.get("column")),
            "board_read": board is not None,
            "silent": [],
            "grid": views.completeness_grid([]),
            "generated_at": None,
            "error": None,
        }
        try:
            doc = await office.aggregator.reporting(filters)
        except (UnknownQuery, NotFound) as exc:  # an unknown authority or column, a bad period
            context["error"] = str(exc)
            return render(request, "reporting.html", "reporting", 422, **context)
        except AggregatorUnavailable as exc:
            return problem(request, "reporting", 503, "No data", str(exc))
        context.update(
            silent=doc["silent"],
            grid=views.completeness_grid(doc["completeness"]),
            generated_at=doc["generated_at"],
        )
        return render(request, "reporting.html", "reporting", **context)

    @router.get("/reporting/{authority}", include_in_schema=False)
    async def authority_reporting(request: Request, authority: str) -> Response:
        if (refused := gate(request, "authority")) is not None:
            return refused
        try:
            doc = await office.aggregator.authority_reporting(authority)
        except NotFound:
            return problem(
                request, "authority", 404, "No such authority", f"There is no authority {authority}"
            )
        except (AggregatorUnavailable, UnknownQuery) as exc:
            return problem(request, "authority", 503, "No data", str(exc))
        return render(
            request,
            "authority.html",
            "reporting",
            doc={
                **doc,
                "missing": sorted(doc["missing"], key=lambda o: (o["due"], o["obligation"])),
                "late": sorted(doc["late"], key=lambda o: (o["due"], o["obligation"])),
            },
            grid=views.completeness_grid(doc["completeness"]),
        )

    review_filters = ("column", "authority", "kind", "limit")

    @router.get("/reviews", include_in_schema=False)
    async def reviews(request: Request) -> Response:
        if (refused := gate(request, "reviews", review_filters)) is not None:
            return refused
        filters = filters_of(request, review_filters)
        context: dict[str, Any] = {
            "filters": filters,
            "columns": board_columns(),
            "queue": None,
            "error": None,
        }
        try:
            context["queue"] = await office.aggregator.reviews(filters)
        except (UnknownQuery, NotFound) as exc:
            context["error"] = str(exc)
            return render(request, "reviews.html", "reviews", 422, **context)
        except AggregatorUnavailable as exc:
            return problem(request, "reviews", 503, "No data", str(exc))
        return render(request, "reviews.html", "reviews", **context)

    def refusal(
        export: str, reason: str, title: str = "This export cannot be made"
    ) -> dict[str, str]:
        """Why ``export`` (iati or gmpp) was not made, for the notice beside its form."""
        return {"export": export, "title": title, "reason": reason}

    def exports_page(
        request: Request,
        status: int = 200,
        refused: dict[str, str] | None = None,
        as_at: str = "",
        quarter: str = "",
        form: str = "csv",
    ) -> HTMLResponse:
        """The exports page: both forms, holding what was asked after a refusal, and which
        export was refused (``refused``: export, title, reason)."""
        today = datetime.now(UTC).date()
        quarters = views.quarters_since(office.programme_start, today)
        return render(
            request,
            "exports.html",
            "exports",
            status,
            programme_start=views.day_label(office.programme_start),
            today=today.isoformat(),
            quarters=[(q, views.quarter_label(q, today)) for q in quarters],
            formats=EXPORT_FORMATS,
            chosen={
                "as_at": as_at,
                "quarter": quarter or views.last_ended_quarter(quarters, today) or "",
                "format": form,
            },
            refused=refused,
        )

    async def export(
        request: Request,
        which: str,
        read: Callable[[], Awaitable[Download]],
        filename: str,
        asked: dict[str, str],
    ) -> Response:
        """The aggregator's export ``which`` as a file to save (its bytes and content type
        as it sent them), or the exports page saying why not (``asked``: the forms' values
        to show again)."""
        try:
            download = await read()
        except UnknownQuery as exc:  # a date or quarter it will not export, and why
            return exports_page(request, 422, refusal(which, str(exc)), **asked)
        except (AggregatorUnavailable, NotFound) as exc:  # NotFound: it has no exports yet
            unanswered = refusal(which, str(exc), "No data: the aggregator did not answer")
            return exports_page(request, 503, unanswered, **asked)
        office.metrics.pages.labels(f"export-{which}", "200").inc()
        return Response(
            download.body,
            media_type=download.content_type,
            headers={
                **SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",  # "as at now" is another file a minute later
            },
        )

    @router.get("/exports", include_in_schema=False)
    async def exports(request: Request) -> Response:
        if (refused := gate(request, "exports")) is not None:
            return refused
        return exports_page(request)

    @router.get("/exports/iati-activities.xml", include_in_schema=False)
    async def iati_export(request: Request) -> Response:
        if (refused := gate(request, "exports", ("as_at",))) is not None:
            return refused
        given = request.query_params.get("as_at", "").strip()
        try:
            # The as-at picker's rule: a date is the end of that day (now, for today).
            instant = instant_of(given) if given else None
        except ValueError:
            reason = f"as_at: {given!r} is neither a date (2026-03-01) nor an RFC 3339 time"
            return exports_page(request, 422, refusal("iati", reason), as_at=given)
        return await export(
            request,
            "iati",
            lambda: office.aggregator.iati_activities(instant),
            f"cotn-iati-{views.file_stem(given) if given else 'now'}.xml",
            {"as_at": given},
        )

    async def gmpp_export(request: Request, form: str) -> Response:
        """The GMPP-style return for the quarter asked, as ``form`` (csv or json)."""
        quarter = request.query_params.get("quarter", "").strip()
        return await export(
            request,
            "gmpp",
            lambda: office.aggregator.gmpp(quarter, form),  # it says what is wrong with one
            f"cotn-gmpp-{views.file_stem(quarter)}.{form}",
            {"quarter": quarter, "form": form},
        )

    @router.get("/exports/gmpp", include_in_schema=False)
    async def gmpp_form(request: Request) -> Response:
        """The GMPP form's target: a plain form cannot pick its action by a field, so the
        format is a field here."""
        if (refused := gate(request, "exports", ("quarter", "format"))) is not None:
            return refused
        form = request.query_params.get("format", "csv").strip()
        if form not in EXPORT_FORMATS:
            reason = f"format: {form!r} is not one of {', '.join(EXPORT_FORMATS)}"
            quarter = request.query_params.get("quarter", "").strip()
            return exports_page(request, 422, refusal("gmpp", reason), quarter=quarter)
        return await gmpp_export(request, form)

    @router.get("/exports/gmpp.csv", include_in_schema=False)
    async def gmpp_csv(request: Request) -> Response:
        if (refused := gate(request, "exports", ("quarter",))) is not None:
            return refused
        return await gmpp_export(request, "csv")

    @router.get("/exports/gmpp.json", include_in_schema=False)
    async def gmpp_json(request: Request) -> Response:
        if (refused := gate(request, "exports", ("quarter",))) is not None:
            return refused
        return await gmpp_export(request, "json")

    @router.get("/login", include_in_schema=False)
    async def login_page(request: Request, next: str = "/") -> Response:
        return render(request, "login.html", "login", next=safe_next(next), error=None)

    @router.post("/login", include_in_schema=False)
    async def login(
        request: Request,
        token: str = Form(""),
        csrf_token_field: str = Form("", alias=CSRF_FIELD),
        next: str = Form("/"),
    ) -> Response:
        if not csrf_ok(request, csrf_token_field):
            return problem(
                request, "login", 403, "Form expired", "The form had no valid CSRF token: reload"
            )
        record = office.tokens.record_of(token.strip())
        if record is None:
            return render(
                request,
                "login.html",
                "login",
                401,
                next=safe_next(next),
                error="That token is not known or has been revoked.",
            )
        sign_in(request, record.authority)
        return RedirectResponse(safe_next(next), status_code=303, headers=SECURITY_HEADERS)

    @router.post("/logout", include_in_schema=False)
    async def logout(
        request: Request, csrf_token_field: str = Form("", alias=CSRF_FIELD)
    ) -> Response:
        if not csrf_ok(request, csrf_token_field):
            return problem(
                request, "logout", 403, "Form expired", "The form had no valid CSRF token: reload"
            )
        sign_out(request)
        return RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        # Ready once it serves pages; an aggregator that is down is shown on them as stale.
        return Response('{"status":"ready"}', media_type="application/json")

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(office.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
