"""The programme office's API: completeness of returns, the review queue, and reviews.

``GET /v1/reporting`` and ``GET /v1/reporting/{authority}`` rate the stored returns against
the catalogue's obligations (:mod:`shared.reporting`) at the clock's ``today``.
``GET /v1/reviews`` is the queue: returns waiting for review, returned for correction, and
events a lock kept aside. ``POST /v1/reviews`` takes an office token (``cotn token create
--office``), checks the return exists and where it stands, and publishes an
``org.cotn.review.v1`` event to the stream like any other, with an id made of the action,
the return and the version reviewed, so a retry is the same event and stored once. An
approval or verification then puts the lock into the locks bucket the column services
watch; a reopen of a lock deletes it. A lock reaches the services after its review is on
the stream, so an event they accept meanwhile is later in the stream than the review and
the aggregator keeps it aside (:mod:`shared.reviews`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.aggregator import returns
from services.aggregator.api import (
    MAX_PAGE,
    UNAVAILABLE,
    UNPROCESSABLE,
    Clock,
    FieldProblem,
    ProblemRoute,
    Sessions,
    problem_doc,
    problem_response,
)
from services.aggregator.returns import KeptAside, Return
from services.aggregator.storage.log import EVENT, execute
from shared.bus import event_subject, msg_id
from shared.catalogue import Catalogue
from shared.kinds.review import KIND as REVIEW_KIND
from shared.kinds.review import ReviewEvent, column_of_target
from shared.periods import PERIOD_PATTERN
from shared.reporting import (
    Completeness,
    ReturnKey,
    Silence,
    Status,
    completeness,
    extra_returns,
    obligations,
    silent_reporters,
    statuses,
)
from shared.reviews import (
    LOCKING,
    LOCKS_BUCKET,
    LOCKS_STREAM,
    Action,
    Lock,
    Review,
    kpi_target,
    milestone_target,
)
from shared.tokens import TokenRecord, TokenStore

log = logging.getLogger("cotn.aggregator.office")

STORED_WAIT_SECONDS = 5.0
"""How long a review request waits for the aggregator to have stored its review."""


class ReviewBus(Protocol):
    """Where reviews and locks go: the events stream and the locks bucket."""

    async def publish(self, subject: str, msg_id: str, payload: bytes) -> int:
        """Publish with JetStream's ack; the stream sequence. Raises when it cannot."""
        ...

    async def put_lock(self, lock: Lock) -> None: ...

    async def delete_lock(self, target: str) -> None: ...


class NatsReviewBus:
    """:class:`ReviewBus` over a JetStream context."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.locks = KeyValue(
            name=LOCKS_BUCKET, stream=LOCKS_STREAM, pre=f"$KV.{LOCKS_BUCKET}.", js=js, direct=True
        )

    async def publish(self, subject: str, msg_id: str, payload: bytes) -> int:
        ack = await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        return int(ack.seq)

    async def put_lock(self, lock: Lock) -> None:
        await self.locks.put(lock.target, lock.encode())

    async def delete_lock(self, target: str) -> None:
        await self.locks.delete(target)


# -- documents --------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class EventRef(_Out):
    source: str
    id: str


class ReviewOut(_Out):
    action: str
    by: str = Field(description="The office identity: office/<name>")
    at: datetime = Field(description="When the review was made")
    reason: str | None
    event: EventRef


class ReturnOut(_Out):
    kind: Literal["kpi", "milestone"]
    target: str = Field(description="kpi.<kpi>.<period>.<reporter> or milestone.<p>.<m>")
    column: str
    proposal: str
    reporter: str = Field(description="The authority whose return it is")
    kpi: str | None
    period: str | None
    milestone: str | None
    value: float | None = Field(description="A KPI return: the value received")
    received_at: datetime = Field(description="When its newest version was stored")
    event: EventRef = Field(description="Its newest applied event: what a review is of")
    state: Literal["submitted", "approved", "verified", "returned"]
    review: ReviewOut | None = Field(description="The review that set the state")


class KeptAsideOut(_Out):
    event: EventRef
    type: str
    target: str
    column: str
    proposal: str
    received_at: datetime
    data: dict[str, Any]
    lock: ReviewOut | None = Field(description="The approval or verification that holds it")


class QueueCounts(_Out):
    waiting: int
    returned: int
    kept_aside: int


class QueueOut(_Out):
    generated_at: datetime
    counts: QueueCounts = Field(description="How many of each, whatever the limit")
    waiting: list[ReturnOut] = Field(description="Submitted, waiting for review, oldest first")
    returned: list[ReturnOut] = Field(description="Returned for correction, not resubmitted")
    kept_aside: list[KeptAsideOut] = Field(
        description="Accepted before a lock reached the column service: stored, never applied"
    )


class ReviewRequest(BaseModel):
    """One review: a KPI return (kpi, period, reporter) or a completion (proposal,
    milestone)."""

    model_config = ConfigDict(extra="forbid")

    action: Action = Field(
        description="approve or return a KPI return; verify or return a completion; reopen either"
    )
    kpi: str | None = None
    period: str | None = None
    reporter: str | None = None
    proposal: str | None = None
    milestone: str | None = None
    reason: str | None = Field(
        default=None, description="Required to return or reopen; the authority sees it"
    )


class ReviewResult(_Out):
    state: Literal["submitted", "approved", "verified", "returned"]
    review: ReviewOut
    lock: str | None = Field(description="The lock now held, for people; null for none")
    stored: bool = Field(
        description="Whether the aggregator had stored the review when it answered"
    )


class CompletenessOut(_Out):
    authority: str
    period: str
    expected: int = Field(description="Returns owed: on_time + late + missing + pending")
    received: int
    on_time: int
    late: int
    missing: int = Field(description="Past due, nothing received")
    pending: int = Field(description="Not yet due, nothing received")
    extra: int = Field(description="Received but not owed: counted apart, never in the rates")
    completeness: float | None = Field(description="received / due (0..1); null if none due")
    timeliness: float | None = Field(description="on_time / due (0..1); null if none due")


class SilenceOut(_Out):
    authority: str
    kind: Literal["kpi", "update"]
    obligation: str = Field(description="The KPI or the proposal the returns are of")
    column: str
    since: date = Field(description="Due day of the first return missing in a row")
    periods: list[str] = Field(description="The periods missing in a row, up to the newest due")


class ReportingOut(_Out):
    generated_at: datetime
    completeness: list[CompletenessOut] = Field(description="Per authority and period")
    silent: list[SilenceOut] = Field(description="Silent reporters: newest due return missing")


class OwedOut(_Out):
    kind: Literal["kpi", "update"]
    obligation: str
    column: str
    period: str
    due: date = Field(description="On time if received by the end of this day (UTC)")
    state: Literal["on_time", "late", "missing", "pending"]
    received_at: datetime | None


class AuthorityReportingOut(_Out):
    authority: str
    name: str
    generated_at: datetime
    next: list[OwedOut] = Field(description="Pending returns, soonest due first")
    late: list[OwedOut] = Field(description="Received after their due day")
    missing: list[OwedOut] = Field(description="Past due, nothing received")
    returned: list[ReturnOut] = Field(description="Returned by the office for correction")
    silent: list[SilenceOut]
    completeness: list[CompletenessOut]


# -- plain data -------------------------------------------------------------------------------


def review_out(review: Review | None) -> dict[str, Any] | None:
    if review is None:
        return None
    return {
        "action": review.action,
        "by": review.source,
        "at": review.event_time,
        "reason": review.reason,
        "event": {"source": review.source, "id": review.event_id},
    }


def return_out(r: Return) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "target": r.target,
        "column": r.column,
        "proposal": r.proposal,
        "reporter": r.reporter,
        "kpi": r.kpi,
        "period": r.period,
        "milestone": r.milestone,
        "value": r.value,
        "received_at": r.received_at,
        "event": {"source": r.source, "id": r.event_id},
        "state": r.state,
        "review": review_out(r.review),
    }


def kept_out(k: KeptAside) -> dict[str, Any]:
    return {
        "event": {"source": k.source, "id": k.event_id},
        "type": k.type,
        "target": k.target,
        "column": k.column,
        "proposal": k.proposal,
        "received_at": k.received_at,
        "data": k.data,
        "lock": review_out(k.lock),
    }


def completeness_out(row: Completeness) -> dict[str, Any]:
    return {
        "authority": row.authority,
        "period": row.period,
        "expected": row.expected,
        "received": row.received,
        "on_time": row.on_time,
        "late": row.late,
        "missing": row.missing,
        "pending": row.pending,
        "extra": row.extra,
        "completeness": row.completeness,
        "timeliness": row.timeliness,
    }


def silence_out(s: Silence) -> dict[str, Any]:
    return {
        "authority": s.authority,
        "kind": s.kind,
        "obligation": s.ref,
        "column": s.column,
        "since": s.since,
        "periods": list(s.periods),
    }


def owed_out(s: Status) -> dict[str, Any]:
    o = s.obligation
    return {
        "kind": o.kind,
        "obligation": o.ref,
        "column": o.column,
        "period": o.period,
        "due": o.due,
        "state": s.state,
        "received_at": s.received,
    }


# -- reading ----------------------------------------------------------------------------------


async def read_reporting(
    *, catalogue: Catalogue, sessions: Sessions, today: date, authority: str | None = None
) -> tuple[list[Status], list[ReturnKey]]:
    """Each obligation's status at ``today`` and the returns nobody owed (``authority``'s
    only, if given)."""
    async with sessions() as session:
        received = await returns.received_returns(
            session=session, catalogue=catalogue, authority=authority
        )
    # Rated in a thread: at a large programme's scale, seconds the event loop must not wait.
    return await asyncio.to_thread(rate_returns, catalogue, today, authority, received)


def rate_returns(
    catalogue: Catalogue,
    today: date,
    authority: str | None,
    received: Mapping[ReturnKey, datetime],
) -> tuple[list[Status], list[ReturnKey]]:
    owed = obligations(catalogue, today, authority)
    return statuses(owed, received, today), extra_returns(owed, received)


def reporting_document(
    catalogue: Catalogue,
    found: list[Status],
    extra: list[ReturnKey],
    now: datetime,
    *,
    authority: str | None = None,
    column: str | None = None,
    period: str | None = None,
) -> dict[str, Any]:
    def kept(a: str, c: str, p: str) -> bool:
        return (
            (authority is None or a == authority)
            and (column is None or c == column)
            and (period is None or p == period)
        )

    mine = [
        s for s in found if kept(s.obligation.authority, s.obligation.column, s.obligation.period)
    ]
    mine_extra = [
        k for k in extra if kept(k[2], returns.column_of_return(catalogue, k[0], k[1]), k[3])
    ]
    return {
        "generated_at": now,
        "completeness": [completeness_out(r) for r in completeness(mine, mine_extra)],
        "silent": [silence_out(s) for s in silent_reporters(mine)],
    }


# -- the router -------------------------------------------------------------------------------


Bearer = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(
        HTTPBearer(auto_error=False, description="An office token: cotn token create --office")
    ),
]

AuthorityFilter = Annotated[str | None, Query(description="Only this authority's returns")]
ColumnFilter = Annotated[str | None, Query(description="Only this column's returns")]

UNAUTHORISED = problem_doc(401)
FORBIDDEN = problem_doc(403)
CONFLICT = problem_doc(409)


def _unknown(field: str, value: str, known: list[str]) -> JSONResponse:
    reason = f"unknown {field} {value!r} (known: {', '.join(known)})"
    return problem_response(
        422, f"invalid query parameter: {field}", [FieldProblem(field=field, reason=reason)]
    )


def _refuse(status: int, detail: str, field: str, reason: str) -> JSONResponse:
    return problem_response(status, detail, [FieldProblem(field=field, reason=reason)])


def build_office_router(
    *,
    catalogue: Catalogue,
    sessions: Sessions,
    clock: Clock,
    tokens: TokenStore,
    bus: Callable[[], ReviewBus | None],
) -> APIRouter:
    """The office's API; ``bus()`` is None while NATS is not connected."""
    router = APIRouter(route_class=ProblemRoute)
    authorities = [a.id for a in catalogue.authorities]
    columns = [c.id for c in catalogue.columns]

    def check_filters(authority: str | None, column: str | None) -> JSONResponse | None:
        if authority is not None and authority not in catalogue.authority_by_id:
            return _unknown("authority", authority, authorities)
        if column is not None and column not in catalogue.column_by_id:
            return _unknown("column", column, columns)
        return None

    @router.get(
        "/v1/reporting",
        tags=["reporting"],
        summary="Completeness of returns by authority and period, and the silent reporters",
        response_model=ReportingOut,
        responses={**UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_reporting(
        authority: AuthorityFilter = None,
        column: ColumnFilter = None,
        period: Annotated[
            str | None,
            Query(
                pattern=PERIOD_PATTERN,
                description="Only this period (2026, 2026-Q3 or 2026-07)",
            ),
        ] = None,
    ) -> Response:
        if (refused := check_filters(authority, column)) is not None:
            return refused
        now = clock()
        found, extra = await read_reporting(
            catalogue=catalogue,
            sessions=sessions,
            today=now.astimezone(UTC).date(),
            authority=authority,
        )
        doc = reporting_document(
            catalogue, found, extra, now, authority=authority, column=column, period=period
        )
        return JSONResponse(ReportingOut.model_validate(doc).model_dump(mode="json"))

    @router.get(
        "/v1/reporting/{authority}",
        tags=["reporting"],
        summary="What one authority owes next, what was late, what is missing or returned",
        response_model=AuthorityReportingOut,
        responses={**problem_doc(404), **UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_authority_reporting(authority: str) -> Response:
        known = catalogue.authority_by_id.get(authority)
        if known is None:
            return problem_response(
                404,
                f"no authority {authority!r} in the catalogue (known: {', '.join(authorities)})",
            )
        now = clock()
        mine, extra = await read_reporting(
            catalogue=catalogue,
            sessions=sessions,
            today=now.astimezone(UTC).date(),
            authority=authority,
        )
        async with sessions() as session:
            reviews = await returns.all_reviews(session=session)
            received = await returns.kpi_returns(
                session=session,
                catalogue=catalogue,
                reviews=reviews,
                where=[EVENT.c.source == authority],
            )
            received += await returns.completions(
                session=session, catalogue=catalogue, reviews=reviews
            )
        doc = {
            "authority": authority,
            "name": known.name,
            "generated_at": now,
            "next": [
                owed_out(s)
                for s in sorted(mine, key=lambda s: s.obligation.due)
                if s.state == "pending"
            ],
            "late": [owed_out(s) for s in mine if s.state == "late"],
            "missing": [owed_out(s) for s in mine if s.state == "missing"],
            "returned": [
                return_out(r) for r in received if r.state == "returned" and r.reporter == authority
            ],
            "silent": [silence_out(s) for s in silent_reporters(mine)],
            "completeness": [completeness_out(r) for r in completeness(mine, extra)],
        }
        return JSONResponse(AuthorityReportingOut.model_validate(doc).model_dump(mode="json"))

    @router.get(
        "/v1/reviews",
        tags=["reviews"],
        summary="The review queue: waiting, returned for correction, and kept aside by a lock",
        response_model=QueueOut,
        responses={**UNPROCESSABLE, **UNAVAILABLE},
    )
    async def get_reviews(
        column: ColumnFilter = None,
        authority: AuthorityFilter = None,
        kind: Annotated[
            Literal["kpi", "milestone"] | None,
            Query(description="Only KPI returns or only completions"),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE, description="At most this many of each list")
        ] = 100,
    ) -> Response:
        if (refused := check_filters(authority, column)) is not None:
            return refused
        async with sessions() as session:
            queue = await returns.read_queue(session=session, catalogue=catalogue, kind=kind)
        found = [
            r
            for r in queue.returns
            if (column is None or r.column == column)
            and (authority is None or r.reporter == authority)
        ]
        aside = [
            k
            for k in queue.kept_aside
            if (column is None or k.column == column)
            and (authority is None or k.source == authority)
            and (kind is None or k.target.startswith(f"{kind}."))
        ]
        waiting = [r for r in found if r.state == "submitted"]
        returned_ = [r for r in found if r.state == "returned"]
        doc = {
            "generated_at": clock(),
            "counts": {
                "waiting": len(waiting),
                "returned": len(returned_),
                "kept_aside": len(aside),
            },
            "waiting": [return_out(r) for r in waiting[:limit]],
            "returned": [return_out(r) for r in returned_[:limit]],
            "kept_aside": [kept_out(k) for k in aside[:limit]],
        }
        return JSONResponse(QueueOut.model_validate(doc).model_dump(mode="json"))

    @router.post(
        "/v1/reviews",
        tags=["reviews"],
        summary="Approve, verify, return or reopen a return (an office token)",
        status_code=201,
        response_model=ReviewResult,
        responses={
            200: {"description": "Already so: the same review was made before; nothing new"},
            **UNAUTHORISED,
            **FORBIDDEN,
            **CONFLICT,
            **UNPROCESSABLE,
            **UNAVAILABLE,
        },
    )
    async def post_review(request: Request, credentials: Bearer) -> Response:
        """Review one return. Approving or verifying locks it: the column services refuse
        later events for it (409) and an event they accepted before the lock reached them
        is kept aside. A reopen (with a reason) unlocks it; a return (with a reason) asks
        the authority for a correction, which is then submitted again."""
        token = _office(tokens, credentials)
        if isinstance(token, JSONResponse):
            return token
        try:
            body = ReviewRequest.model_validate(await request.json())
        except ValueError as exc:
            return _body_problem(exc)
        problems = _request_problems(body)
        if problems:
            return problem_response(
                422, f"invalid review: {', '.join(p.field for p in problems)}", problems
            )
        event = _review_event(catalogue, body, token, clock(), reviewed=None, version=0)
        if isinstance(event, JSONResponse):
            return event
        target = event.data.target
        async with sessions() as session:
            current = await returns.return_of(session=session, catalogue=catalogue, target=target)
        if current is None:
            field = "period" if body.kpi else "milestone"
            what = (
                f"no return of KPI {body.kpi} for {body.period} from {body.reporter} was received"
                if body.kpi
                else f"milestone {body.proposal}/{body.milestone} is not completed"
            )
            return _refuse(422, f"invalid review: {field}", field, what)
        if token.member_of and token.member_of == current.reporter:
            return _refuse(
                403,
                "an office identity may not review its own authority's return",
                "reporter" if current.kind == "kpi" else "milestone",
                f"{token.authority} is a member of {token.member_of}, whose return it is",
            )
        outcome = _transition(body.action, current)
        if isinstance(outcome, JSONResponse):
            return outcome
        if outcome == "already":
            # Made before; its lock is set (or lifted) again, in case the bus failed then.
            assert current.review is not None
            refused = await _settle_lock(current.review)
            if refused is not None:
                return refused
            return _result(current.state, current.review, current.target, stored=True, status=200)
        version = current.review.stream_seq if body.action == "reopen" and current.review else 0
        event = _review_event(
            catalogue, body, token, clock(),
            reviewed={"source": current.source, "id": current.event_id},
            version=version or current.stream_seq,
        )  # fmt: skip
        assert not isinstance(event, JSONResponse)
        return await _publish(event)

    @router.api_route(
        "/v1/reviews", methods=["PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
    )
    async def other_methods() -> Response:
        # Two routes share the path: without this, Starlette's 405 would name the first's
        # method alone in Allow.
        return problem_response(
            405, "/v1/reviews takes GET and POST", headers={"Allow": "GET, POST"}
        )

    async def _publish(event: ReviewEvent) -> Response:
        target_bus = bus()
        column, proposal = column_of_target(catalogue, event.data)
        try:
            if target_bus is None:
                raise ConnectionError("the event bus is not connected")
            await target_bus.publish(
                event_subject(column, proposal, REVIEW_KIND.name),
                msg_id(event.source, event.id),
                event.model_dump_json(exclude_none=True).encode(),
            )
        except Exception as exc:  # the bus refused or timed out: the same request is safe again
            return _bus_refused(event.id, exc)
        review = Review(
            target=event.data.target, action=event.data.action, stream_seq=0,
            source=event.source, event_id=event.id, event_time=event.time,
            reason=event.data.reason,
        )  # fmt: skip
        refused = await _settle_lock(review)
        if refused is not None:
            return refused
        stored = await _stored(event)
        state = {"approve": "approved", "verify": "verified", "return": "returned"}.get(
            event.data.action, "submitted"
        )
        return _result(state, review, event.data.target, stored=stored, status=201)

    async def _settle_lock(review: Review) -> JSONResponse | None:
        """Put the lock an approval or verification sets, or delete the one a reopen lifts
        (a delete of no lock is harmless); None when done, else the 503 to answer (the same
        request is safe again)."""
        target_bus = bus()
        try:
            if target_bus is None:
                raise ConnectionError("the event bus is not connected")
            if review.action in LOCKING:
                await target_bus.put_lock(lock_of_review(review))
            elif review.action == "reopen":
                await target_bus.delete_lock(review.target)
        except Exception as exc:
            return _bus_refused(review.event_id, exc)
        return None

    async def _stored(event: ReviewEvent) -> bool:
        """Wait (a few seconds at most) until the consumer has stored the review, so the
        queue read next shows it."""
        deadline = asyncio.get_running_loop().time() + STORED_WAIT_SECONDS
        while True:
            async with sessions() as session:
                found = await execute(
                    session,
                    sa.select(EVENT.c.stream_seq).where(
                        EVENT.c.source == event.source, EVENT.c.event_id == event.id
                    ),
                )
                if found.first() is not None:
                    return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)

    return router


def _office(
    tokens: TokenStore, credentials: HTTPAuthorizationCredentials | None
) -> TokenRecord | JSONResponse:
    if credentials is None:
        return problem_response(
            401,
            "send an office token as Authorization: Bearer <token> (cotn token create --office)",
            headers={"WWW-Authenticate": 'Bearer realm="cotn"'},
        )
    record = tokens.record_of(credentials.credentials)
    if record is None:
        return problem_response(
            401,
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="cotn", error="invalid_token"'},
        )
    if not record.is_office:
        return _refuse(
            403,
            "reviews are made by the programme office; this is an authority's token",
            "Authorization",
            f"token {record.token_id} belongs to the authority {record.authority}",
        )
    return record


def _body_problem(exc: ValueError) -> JSONResponse:
    if isinstance(exc, ValidationError):
        errors = [
            FieldProblem(
                field=".".join(str(p) for p in err["loc"]) or "(body)",
                reason=str(err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
    else:
        errors = [FieldProblem(field="(body)", reason="is not a JSON object")]
    return problem_response(422, f"invalid review: {', '.join(e.field for e in errors)}", errors)


def _request_problems(body: ReviewRequest) -> list[FieldProblem]:
    """What a review request misses, each named: one return, and a reason where one is due."""
    problems = []
    kpi = {"kpi": body.kpi, "period": body.period, "reporter": body.reporter}
    completion = {"proposal": body.proposal, "milestone": body.milestone}
    if any(kpi.values()) and any(completion.values()):
        problems.append(
            FieldProblem(
                field="(body)",
                reason="names a KPI return (kpi, period, reporter) or a completion (proposal, "
                "milestone), not both",
            )
        )
    elif any(kpi.values()) or not any(completion.values()):
        problems += [
            FieldProblem(field=name, reason="is required to review a KPI return")
            for name, value in kpi.items()
            if not value
        ]
        if body.action == "verify":
            problems.append(
                FieldProblem(field="action", reason="a KPI return is approved, not verified")
            )
    else:
        problems += [
            FieldProblem(field=name, reason="is required to review a completion")
            for name, value in completion.items()
            if not value
        ]
        if body.action == "approve":
            problems.append(
                FieldProblem(field="action", reason="a completion is verified, not approved")
            )
    if body.action in ("return", "reopen") and not (body.reason and body.reason.strip()):
        problems.append(
            FieldProblem(
                field="reason", reason=f"is required to {body.action}: the authority sees it"
            )
        )
    return problems


def _review_event(
    catalogue: Catalogue,
    body: ReviewRequest,
    token: TokenRecord,
    now: datetime,
    *,
    reviewed: dict[str, str] | None,
    version: int,
) -> ReviewEvent | JSONResponse:
    """The review event of a request, checked as a column service checks an event: each
    problem named by the request's field."""
    data = {k: v for k, v in body.model_dump().items() if v is not None}
    target = (
        kpi_target(str(body.kpi), str(body.period), str(body.reporter))
        if body.kpi
        else milestone_target(str(body.proposal), str(body.milestone))
    )
    try:
        event = ReviewEvent.model_validate(
            {
                "specversion": "1.0",
                "id": f"{body.action}.{target}.{version}",
                "source": token.authority,
                "type": REVIEW_KIND.type,
                "time": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "data": {**data, **({"reviewed": reviewed} if reviewed else {})},
            }
        )
    except ValidationError as exc:
        errors = [
            FieldProblem(
                field=".".join(str(p) for p in err["loc"] if p != "data") or "(body)",
                reason=str(err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
        return problem_response(
            422, f"invalid review: {', '.join(e.field for e in errors)}", errors
        )
    try:
        column = column_of_target(catalogue, event.data)[0]
    except KeyError:
        column = ""
    found = REVIEW_KIND.check(event, catalogue=catalogue, column=column, authority=token.authority)
    found = [p for p in found if p.code != "bad_subject"]
    if found:
        errors = [FieldProblem(field=p.field.removeprefix("data."), reason=p.reason) for p in found]
        return problem_response(
            422, f"invalid review: {', '.join(e.field for e in errors)}", errors
        )
    return event


Transition = Literal["new", "already"]


def _transition(action: Action, current: Return) -> Transition | JSONResponse:
    """Whether ``action`` may be made on a return in its state: new, already so, or 409."""
    state = current.state
    field = "period" if current.kind == "kpi" else "milestone"
    if action in ("approve", "verify"):
        return "already" if state in ("approved", "verified") else "new"
    if action == "return":
        if state == "returned":
            return "already"
        if state in ("approved", "verified"):
            return _refuse(
                409,
                f"{current.target} is {state}: reopen it before returning it",
                field,
                f"is {state} by {current.review.source if current.review else 'the office'}",
            )
        return "new"
    if state == "submitted" and current.review is not None:
        return "already"  # reopened before, and nothing received since
    if state == "submitted":
        return _refuse(
            409,
            f"{current.target} is submitted, not approved, verified or returned: nothing to reopen",
            field,
            "is not approved, verified or returned",
        )
    return "new"


def lock_of_review(review: Review) -> Lock:
    """The lock an approval or verification sets, as the locks bucket holds it."""
    at = review.event_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Lock(review.target, review.action, review.source, at, review.event_id)


def _bus_refused(review_id: str, exc: BaseException) -> JSONResponse:
    log.warning("review %s could not be published or its lock set: %r", review_id, exc)
    return problem_response(
        503,
        f"the event bus did not take the review or its lock ({type(exc).__name__}); retry the "
        "same request: the review is stored once",
        headers={"Retry-After": "5"},
    )


def _result(state: str, review: Review, target: str, *, stored: bool, status: int) -> JSONResponse:
    lock = lock_of_review(review) if state in ("approved", "verified") else None
    body = ReviewResult.model_validate(
        {
            "state": state,
            "review": review_out(review),
            "lock": lock.describe() if lock else None,
            "stored": stored,
        }
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)
