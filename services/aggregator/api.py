"""The aggregator's read API (CONTRACT §5): the board, one proposal, KPIs, the audit trail.

The live board (``/v1/programme``, ``/v1/proposals/{id}``, ``/v1/kpis`` without ``as_at``
or ``known_at``) is answered from the :class:`~services.aggregator.snapshot.LiveBoard`'s
snapshot: the stored state rated with :func:`shared.health.programme_health`, encoded once,
built again as soon as the store's version or the clock makes it stale, so every answer is
the rating of ``now`` and two replicas over one database answer alike. Its answers carry a
strong ``ETag`` and ``Cache-Control: no-cache``; an ``If-None-Match`` naming the current
tag is answered ``304 Not Modified``. With ``as_at`` or ``known_at`` each request reads the
state the log gives for that instant (``queries.load_state``) and rates it with the same
function at that instant; history, changes and a KPI's series come from the same functions.
Every route refuses a query parameter it does not take (422 naming it). Errors are RFC
9457 problem documents (``application/problem+json``), including the 422 of a malformed
query parameter and the 503 (with ``Retry-After``) of a database that cannot answer or is
still being migrated, which the routes produce themselves so they need no app-wide
exception handler.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic_core import to_json
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator import queries, returns
from services.aggregator.board import (
    LIVE,
    ChangesOut,
    KpiListOut,
    KpiSeriesOut,
    Locks,
    ProgrammeOut,
    ProposalDetailOut,
    ProposalHistoryOut,
    View,
    changes_view,
    history_view,
    kpi_list,
    kpi_series,
    programme_document,
    proposal_detail,
)
from services.aggregator.models import EventPublic
from services.aggregator.snapshot import Encoded, LiveBoard
from shared.catalogue import Catalogue
from shared.events import Timestamp
from shared.health import (
    ProgrammeHealth,
    kpi_health,
    kpi_periods,
    programme_health,
    proposal_history,
    rating_changes,
)
from shared.kinds import KINDS
from shared.reviews import kpi_target

log = logging.getLogger("cotn.aggregator.api")

Clock = Callable[[], datetime]
Sessions = Callable[[], AsyncSession]
"""Opens a read session; may raise :class:`StoreNotReady` instead."""
Ready = Callable[[], tuple[bool, str] | Awaitable[tuple[bool, str]]]
"""Answers (ready, detail) for /readyz; a coroutine function is awaited."""

PROBLEM_JSON = "application/problem+json"
MAX_PAGE = 1000
# RFC 9110's name; Python before 3.13 still says "Unprocessable Entity".
TITLES = {422: "Unprocessable Content"}
RETRY_AFTER_SECONDS = 5


class StoreNotReady(Exception):
    """The stored state cannot be read yet; the message says why."""


STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    StoreNotReady,
    DBAPIError,  # the server refused or dropped the connection, or the schema is missing
    PoolTimeoutError,  # every pooled connection busy for the pool's timeout
    OSError,  # the server's address refused the connection
)
"""What a read of the store raises while the database cannot answer: a 503, not a 500."""


class FieldProblem(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = Field(
        default=None, description="For 422: each query parameter at fault and why"
    )


class EventsPage(BaseModel):
    events: list[EventPublic]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end"
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    detail: str


TYPE_QUERY = Query(alias="type", description="Only events of this CloudEvents type")


def _title(status: int) -> str:
    return TITLES.get(status) or HTTPStatus(status).phrase


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every local ``$ref`` replaced by its definition."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def problem_doc(status: int) -> dict[int | str, dict[str, Any]]:
    # FastAPI files a response "model" under the route's own media type (application/json),
    # so the problem schema is given inline under its real media type instead.
    schema = Problem.model_json_schema()
    schema = _inline_refs(schema, schema.get("$defs", {}))
    return {status: {"description": _title(status), "content": {PROBLEM_JSON: {"schema": schema}}}}


ETAG_HEADER = {
    "description": "The answer's strong entity tag: send it as If-None-Match to revalidate",
    "schema": {"type": "string"},
}
REVALIDATED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": ETAG_HEADER,
            "Cache-Control": {
                "description": "no-cache: store it, but revalidate before each use",
                "schema": {"type": "string"},
            },
        }
    },
    304: {
        "description": "Not Modified: the live answer is still the one If-None-Match names "
        "(no body)",
        "headers": {"ETag": ETAG_HEADER},
    },
}
"""The live board's answers: tagged, and revalidated with If-None-Match."""

IfNoneMatch = Annotated[
    str | None,
    Header(
        description="ETags of live answers already held (or *): 304 when the current one is "
        "among them; ignored with as_at or known_at"
    ),
]


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match value names ``etag`` (RFC 9110 §13.1.2: ``*`` or a list,
    compared weakly, so a ``W/`` prefix is ignored)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def tagged(answer: Encoded, if_none_match: str | None) -> Response:
    """The live answer with its ETag, or 304 if the client holds it already."""
    headers = {"ETag": answer.etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and etag_matches(if_none_match, answer.etag):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)


NOT_FOUND = problem_doc(404)
UNPROCESSABLE = problem_doc(422)
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: problem_doc(503)[503]
    | {
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait: the database cannot answer or is being migrated",
                "schema": {"type": "integer"},
            }
        }
    }
}


def problem_response(
    status: int,
    detail: str,
    errors: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem document; ``about:blank`` types take the HTTP phrase as title (RFC 9457 §4.2.1)."""
    body = Problem(title=_title(status), status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def unavailable_reason(exc: BaseException) -> str:
    """Why the store could not be read, for a client: no SQL and no server addresses."""
    if isinstance(exc, StoreNotReady):
        return str(exc)
    return "the database is not answering"


def log_unreadable(path: str, exc: BaseException) -> None:
    log.warning("%s: the store cannot be read (%s: %s)", path, type(exc).__name__, exc)


def store_unavailable(exc: BaseException, path: str) -> JSONResponse:
    """503 with Retry-After: the board is back as soon as the database is."""
    log_unreadable(path, exc)
    return problem_response(
        503,
        f"{unavailable_reason(exc)}; retry in {RETRY_AFTER_SECONDS} s",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    """A 422 problem naming each bad parameter by its name, not FastAPI's location tuple."""
    errors = [
        FieldProblem(
            field=str(err["loc"][-1]) if err["loc"] else "(request)",
            reason=str(err["msg"]).removeprefix("Value error, "),
        )
        for err in exc.errors()
    ]
    names = ", ".join(sorted({e.field for e in errors}))
    return problem_response(422, f"invalid query parameter: {names}", errors)


def unknown_parameters(request: Request, known: frozenset[str]) -> JSONResponse | None:
    """The 422 naming each query parameter the endpoint does not take, or None."""
    unknown = sorted({name for name in request.query_params if name not in known})
    if not unknown:
        return None
    taken = ", ".join(sorted(known)) or "none"
    errors = [
        FieldProblem(
            field=name, reason=f"is not a query parameter of this endpoint (known: {taken})"
        )
        for name in unknown
    ]
    return problem_response(422, f"unknown query parameter: {', '.join(unknown)}", errors)


def query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route takes, its dependencies' included, by their names."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return frozenset(names)


class ProblemRoute(APIRoute):
    """A route whose request-validation failures and unreadable store come out as problem
    documents (422 and 503), and that refuses a query parameter it does not know (422
    naming it) instead of ignoring it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        known = query_names(self.dependant)

        async def route(request: Request) -> Response:
            refused = unknown_parameters(request, known)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return validation_problem(exc)
            except STORE_UNAVAILABLE as exc:
                return store_unavailable(exc, request.url.path)

        return route


async def read_health(
    *, catalogue: Catalogue, sessions: Sessions, clock: Clock, view: View = LIVE
) -> ProgrammeHealth:
    """Load the stored state in one session and rate it at the clock's ``now``; for an
    ``as_at`` or ``known_at`` view, the state the log gives for it, rated at that instant
    (``as_at`` if given, else ``known_at``) with the same function."""
    return (await read_board(catalogue=catalogue, sessions=sessions, clock=clock, view=view))[0]


async def read_board(
    *, catalogue: Catalogue, sessions: Sessions, clock: Clock, view: View = LIVE
) -> tuple[ProgrammeHealth, Locks]:
    """:func:`read_health` and the locks of the same view, read in one session."""
    async with sessions() as session:
        state = await queries.load_state(session=session, as_at=view.as_at, known_at=view.known_at)
        locks = await returns.locks(
            session=session,
            targets=returns.shown_targets(state),
            as_at=view.as_at,
            known_at=view.known_at,
        )
    return programme_health(catalogue, state, rated_at(view, clock)), locks


def rated_at(view: View, clock: Clock) -> datetime:
    """The instant a view is rated at: as_at, else known_at, else now."""
    return view.as_at or view.known_at or clock()


AsAt = Annotated[
    Timestamp | None,
    Query(
        description="The state as now known for this instant (RFC 3339): from events whose "
        "time is not after it, rated with the clock at that instant; not in the future"
    ),
]
KnownAt = Annotated[
    Timestamp | None,
    Query(
        description="Only what had been stored by this instant (RFC 3339): the board as it "
        "was shown then; with as_at, both apply; not in the future"
    ),
]


def view_of(as_at: datetime | None, known_at: datetime | None, clock: Clock) -> View | JSONResponse:
    """The view a request asks for, or the 422 naming each instant in the future."""
    now = clock()
    errors = [
        FieldProblem(
            field=name, reason=f"{value.isoformat()} is in the future (now {now.isoformat()})"
        )
        for name, value in (("as_at", as_at), ("known_at", known_at))
        if value is not None and value > now
    ]
    if errors:
        names = ", ".join(e.field for e in errors)
        return problem_response(422, f"invalid query parameter: {names}", errors)
    return View(as_at, known_at)


def unknown_proposal(catalogue: Catalogue, proposal_id: str) -> JSONResponse:
    known = ", ".join(p.id for p in catalogue.proposals)
    return problem_response(404, f"no proposal {proposal_id!r} in the catalogue (known: {known})")


def build_read_router(
    *,
    catalogue: Catalogue,
    sessions: Sessions,
    clock: Clock,
    ready: Ready,
    live: LiveBoard | None = None,
) -> APIRouter:
    """The read API over the stored state; ``ready()`` answers ``(ready, detail)`` for /readyz.

    ``live`` is the live board's snapshot holder, shared with ``/metrics`` when given."""
    router = APIRouter(route_class=ProblemRoute)
    live = live or LiveBoard(catalogue=catalogue, sessions=sessions, clock=clock)

    async def snapshot(view: View = LIVE) -> ProgrammeHealth:
        return await read_health(catalogue=catalogue, sessions=sessions, clock=clock, view=view)

    async def board(view: View = LIVE) -> tuple[ProgrammeHealth, Locks]:
        return await read_board(catalogue=catalogue, sessions=sessions, clock=clock, view=view)

    @router.get(
        "/v1/programme",
        tags=["board"],
        summary="The whole programme board",
        response_model=ProgrammeOut,
        responses={**REVALIDATED, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_programme(
        as_at: AsAt = None, known_at: KnownAt = None, if_none_match: IfNoneMatch = None
    ) -> Response:
        view = view_of(as_at, known_at, clock)
        if isinstance(view, JSONResponse):
            return view
        if view == LIVE:
            return tagged((await live.snapshot(lag=True)).programme, if_none_match)
        # Serialised straight from the board's plain data: at thousands of milestones a
        # model per milestone would cost more than rating the programme (see board.py).
        with queries.collector_paused():
            health, locks = await board(view)
            body = to_json(programme_document(catalogue, health, view, locks))
        return Response(body, media_type="application/json")

    @router.get(
        "/v1/proposals/{proposal_id}",
        tags=["board"],
        summary="One proposal or gamechanger, with its text and KPIs",
        response_model=ProposalDetailOut,
        responses={**REVALIDATED, **NOT_FOUND, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_proposal(
        proposal_id: str,
        as_at: AsAt = None,
        known_at: KnownAt = None,
        if_none_match: IfNoneMatch = None,
    ) -> ProposalDetailOut | Response:
        if proposal_id not in catalogue.proposal_by_id:
            return unknown_proposal(catalogue, proposal_id)
        view = view_of(as_at, known_at, clock)
        if isinstance(view, JSONResponse):
            return view
        if view == LIVE:
            return tagged((await live.snapshot(lag=True)).proposal(proposal_id), if_none_match)
        health, locks = await board(view)
        detail = proposal_detail(catalogue, health, proposal_id, view, locks)
        assert detail is not None  # the id was checked against the same catalogue
        return detail

    @router.get(
        "/v1/proposals/{proposal_id}/history",
        tags=["history"],
        summary="Each change of a proposal's RAG, stalled and overdue state, oldest first",
        response_model=ProposalHistoryOut,
        responses={**NOT_FOUND, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_history(
        proposal_id: str,
        as_at: Annotated[
            Timestamp | None,
            Query(
                description="The history up to this instant (RFC 3339); known_at, else now, "
                "if absent"
            ),
        ] = None,
        known_at: KnownAt = None,
    ) -> ProposalHistoryOut | JSONResponse:
        proposal = catalogue.proposal_by_id.get(proposal_id)
        if proposal is None:
            return unknown_proposal(catalogue, proposal_id)
        view = view_of(as_at, known_at, clock)
        if isinstance(view, JSONResponse):
            return view
        # Known at an instant: what was known then, so the history runs to then too.
        until = as_at or known_at or clock()
        kpis = [k.id for k in catalogue.kpis_evidencing.get(proposal.id, ())]
        proposals = [proposal.id, *sorted(catalogue.upstream_of.get(proposal.id, ()))]
        async with sessions() as session:
            milestones = await queries.milestone_log(
                session=session, proposals=proposals, as_at=until, known_at=known_at
            )
            reports = await queries.kpi_log(
                session=session, kpis=kpis, as_at=until, known_at=known_at
            )
        entries = proposal_history(catalogue, proposal, milestones, reports, until)
        return history_view(proposal, catalogue.column_of[proposal.id], entries, until, known_at)

    @router.get(
        "/v1/changes",
        tags=["history"],
        summary="The proposals and KPIs whose rating changed between two instants",
        response_model=ChangesOut,
        responses={**UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_changes(
        start: Annotated[
            Timestamp, Query(alias="from", description="The earlier instant (RFC 3339)")
        ],
        end: Annotated[
            Timestamp | None,
            Query(alias="to", description="The later instant (RFC 3339); now if absent"),
        ] = None,
    ) -> ChangesOut | JSONResponse:
        now = clock()
        end_at = end or now
        errors = [
            FieldProblem(field=name, reason=f"{value.isoformat()} is in the future")
            for name, value in (("from", start), ("to", end_at))
            if value > now
        ]
        if not errors and start > end_at:
            errors.append(FieldProblem(field="from", reason="is after to"))
        if errors:
            names = ", ".join(e.field for e in errors)
            return problem_response(422, f"invalid query parameter: {names}", errors)
        before = await snapshot(View(as_at=start))
        after = await snapshot(View(as_at=end_at))
        proposals, kpis = rating_changes(before, after)
        return changes_view(start, end_at, proposals, kpis)

    @router.get(
        "/v1/kpis",
        tags=["board"],
        summary="Every KPI: actual, expected and target",
        response_model=KpiListOut,
        responses={**REVALIDATED, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_kpis(
        as_at: AsAt = None, known_at: KnownAt = None, if_none_match: IfNoneMatch = None
    ) -> KpiListOut | Response:
        view = view_of(as_at, known_at, clock)
        if isinstance(view, JSONResponse):
            return view
        if view == LIVE:
            return tagged((await live.snapshot(lag=True)).kpis, if_none_match)
        health, locks = await board(view)
        return kpi_list(catalogue, health, view, locks)

    @router.get(
        "/v1/kpis/{kpi_id}",
        tags=["board"],
        summary="One KPI: every period's actual and corrections, expected, target, trajectory",
        response_model=KpiSeriesOut,
        responses={**NOT_FOUND, **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_kpi(
        kpi_id: str, as_at: AsAt = None, known_at: KnownAt = None
    ) -> KpiSeriesOut | JSONResponse:
        kpi = catalogue.kpi_by_id.get(kpi_id)
        if kpi is None:
            known = ", ".join(k.id for k in catalogue.kpis)
            return problem_response(404, f"no KPI {kpi_id!r} in the catalogue (known: {known})")
        view = view_of(as_at, known_at, clock)
        if isinstance(view, JSONResponse):
            return view
        async with sessions() as session:
            state = await queries.load_state(
                session=session, as_at=view.as_at, known_at=view.known_at
            )
            reports = await queries.kpi_log(
                session=session, kpis=[kpi.id], as_at=view.as_at, known_at=view.known_at
            )
            locks = await returns.locks(
                session=session,
                targets={kpi_target(r.kpi, r.period, r.source) for r in reports},
                as_at=view.as_at,
                known_at=view.known_at,
            )
        at = rated_at(view, clock)
        health = ProgrammeHealth(
            at=at,
            proposals={},
            kpis={kpi.id: kpi_health(kpi, state.kpi_observations.get(kpi.id, ()), at)},
        )
        return kpi_series(catalogue, health, kpi, kpi_periods(kpi, reports), view, locks)

    async def get_events(
        proposal: Annotated[str | None, Query(description="Only this proposal's events")] = None,
        source: Annotated[str | None, Query(description="Only this authority's events")] = None,
        event_type: Annotated[str | None, TYPE_QUERY] = None,
        since: Annotated[
            Timestamp | None,
            Query(description="Only events from this time on (RFC 3339, with its offset)"),
        ] = None,
        until: Annotated[
            Timestamp | None,
            Query(description="Only events up to this time (RFC 3339, with its offset)"),
        ] = None,
        milestone: Annotated[
            str | None, Query(description="Only events about this milestone")
        ] = None,
        kpi: Annotated[str | None, Query(description="Only events about this KPI")] = None,
        event_id: Annotated[
            str | None, Query(alias="id", description="Only the event with this id")
        ] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 100,
    ) -> EventsPage | JSONResponse:
        if proposal is not None and proposal not in catalogue.proposal_by_id:
            return unknown_proposal(catalogue, proposal)
        if cursor is not None:
            try:
                queries.decode_cursor(cursor)
            except ValueError as exc:
                return problem_response(
                    422, str(exc), [FieldProblem(field="cursor", reason=str(exc))]
                )
        async with sessions() as session:
            events, next_cursor = await queries.list_events(
                session=session,
                proposal=proposal,
                source=source,
                type=event_type,
                since=since,
                until=until,
                milestone=milestone,
                kpi=kpi,
                event_id=event_id,
                cursor=cursor,
                limit=limit,
            )
        return EventsPage(events=events, next_cursor=next_cursor)

    # The kinds registered when the router is built, validated and documented as an enum.
    get_events.__annotations__["event_type"] = Annotated[
        Literal[KINDS.types] | None,
        TYPE_QUERY,
    ]
    router.get(
        "/v1/events",
        tags=["audit"],
        summary="The audit trail of stored events, oldest first, paginated",
        response_model=EventsPage,
        responses={**NOT_FOUND, **UNPROCESSABLE, **UNAVAILABLE},
    )(get_events)

    @router.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> Health:
        return Health()

    @router.get(
        "/readyz",
        tags=["operations"],
        summary="Ready to serve (the database and the bus are reachable)",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
    )
    async def readyz() -> Readiness | JSONResponse:
        answer = ready()
        ok, detail = await answer if inspect.isawaitable(answer) else answer
        body = Readiness(status="ready" if ok else "not_ready", detail=detail)
        if ok:
            return body
        return JSONResponse(body.model_dump(), status_code=503)

    return router
