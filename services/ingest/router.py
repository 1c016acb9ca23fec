"""HTTP handlers of a column service: ``POST /v1/events`` and the probes.

A request is checked in this order, each step answering with its own status: token (401),
an office token (403: the office reviews through the aggregator), the column it was meant
for (421, when the client names one in ``Cotn-Column``), the token's rate (429, one event's
worth), content type (415), size (413), JSON (400), the rate again for the rest of its
events (429), events (403 before 422), locks (409, from memory: services/ingest/locks.py),
then the bus (409 for a reused id, 503).
Unauthenticated and throttled clients therefore never cost a body read.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from services.ingest import openapi
from services.ingest.checking import CheckedBatch, CheckedEvent, check_events, raw_type
from services.ingest.decoding import (
    Mode,
    binary_event,
    check_declared_length,
    content_mode,
    decode_json,
    read_capped,
)
from services.ingest.locks import LOCKED, lock_problem
from services.ingest.metrics import OFFICE_AUTHORITY, UNKNOWN_AUTHORITY, IngestMetrics
from services.ingest.problems import ProblemError, problem_response
from services.ingest.publisher import BusUnavailable, Conflicts, EventBus
from services.ingest.ratelimit import RateLimiter
from services.ingest.settings import IngestSettings
from shared.catalogue import Catalogue
from shared.problems import Problem
from shared.reviews import Lock
from shared.tokens import TokenRecord, TokenStore, TokenUsage

log = logging.getLogger("cotn.ingest")

COLUMN_HEADER = "Cotn-Column"
"""Names the column a client means to post to (``cotn post`` sends it); another is a 421."""


@dataclass(frozen=True)
class IngestContext:
    """What the handlers need, built once per app by ``create_app``."""

    settings: IngestSettings
    catalogue: Catalogue
    tokens: TokenStore
    bus: EventBus
    metrics: IngestMetrics
    clock: Callable[[], datetime]
    limiter: RateLimiter
    usage: TokenUsage


class IngestResult(BaseModel):
    accepted: list[str]
    duplicates: list[str]


async def ingest_context(request: Request) -> IngestContext:
    # async: FastAPI would run a plain function in a worker thread, a thread hop per request.
    context: IngestContext = request.app.state.ingest
    return context


Context = Annotated[IngestContext, Depends(ingest_context)]
Credentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="A token issued by `cotn token create`")),
]


async def no_query_parameters(request: Request) -> None:
    """No endpoint of a column service takes a query parameter: one sent is a 422, not
    ignored (a client that thinks it filters or selects something should learn it does not)."""
    if names := sorted(set(request.query_params)):
        raise ProblemError(
            422,
            "invalid",
            f"unknown query parameter {', '.join(names)}: this endpoint takes none",
            errors=[
                Problem(name, "is not a query parameter of this endpoint (it takes none)")
                for name in names
            ],
        )


router = APIRouter(dependencies=[Depends(no_query_parameters)])
UNKNOWN_QUERY: dict[int | str, dict[str, Any]] = {
    422: openapi.problem("A query parameter was sent; this endpoint takes none")
}


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IngestResult,
    summary="Send one event or a batch",
    openapi_extra={"requestBody": openapi.REQUEST_BODY},
    responses={
        202: {"description": "Every event is stored on the bus (JetStream acknowledged)"},
        400: openapi.problem("The body is not strict UTF-8 JSON"),
        401: openapi.problem(
            "No token, or an unknown or revoked one",
            {"WWW-Authenticate": "Bearer"},
        ),
        403: openapi.problem(
            "The token's authority may not send an event of the request, or the token is the "
            "programme office's (it reviews through the aggregator's POST /v1/reviews)"
        ),
        413: openapi.problem("The body or the batch is too large"),
        415: openapi.problem("Not a CloudEvents JSON content type"),
        421: openapi.problem(
            "The request's Cotn-Column header names another column; nothing was published"
        ),
        409: openapi.problem(
            "An event's (source, id) was accepted before with other content (`conflict`: the "
            "problem names the time of the event that holds the id), or an event is for a "
            "return the programme office approved or verified (`locked`: each error names "
            "the lock, who set it and when, with code `locked`; the office can reopen it); "
            "nothing was published"
        ),
        422: openapi.problem(
            "An event is invalid, or a query parameter was sent; nothing was published"
        ),
        429: openapi.problem(
            "The token sent more events than its rate limit allows; nothing was published",
            {"Retry-After": "Seconds until the whole request fits the limit"},
        ),
        503: openapi.problem(
            "The bus cannot take the events now; retry with the same ids",
            {"Retry-After": "Seconds to wait before retrying"},
        ),
    },
)
async def post_events(request: Request, context: Context, credentials: Credentials) -> Response:
    """Accept events for this column's proposals: all of them, or none.

    The answer is 202 only once every event is on the stream. An event already sent (same
    `source` and `id`) is listed under `duplicates` and stored once.
    """
    started = perf_counter()
    authority = UNKNOWN_AUTHORITY
    try:
        token = _authenticate(context.tokens, credentials)
        authority = OFFICE_AUTHORITY if token.is_office else token.authority
        _note_use(context, token)
        _refuse_office(token)
        result = await _ingest(request, context, token)
    except ProblemError as problem:
        _count_refusal(context.metrics, problem, authority)
        return problem_response(problem)
    finally:
        context.metrics.observe_request(perf_counter() - started)
    return JSONResponse(result.model_dump(), status_code=202)


async def _ingest(request: Request, context: IngestContext, token: TokenRecord) -> IngestResult:
    settings = context.settings
    meant_for = request.headers.get(COLUMN_HEADER)
    if meant_for is not None and meant_for != settings.column:
        raise ProblemError(
            421,
            "misdirected",
            f"this is the {settings.column} column service, but the request is for the "
            f"{meant_for!r} column: send it to that column's service; nothing was published",
        )
    _throttle(context, token, 1)
    mode = content_mode(request.headers.get("content-type"), request.headers)
    check_declared_length(request.headers.get("content-length"), settings.max_body_bytes)
    body = await read_capped(request.stream(), settings.max_body_bytes)
    raws = _events_of(mode, decode_json(body), request.headers, settings.max_batch)
    _throttle(context, token, len(raws) - 1, rejected_types=[raw_type(r) for r in raws])
    batch = check_events(
        raws,
        catalogue=context.catalogue,
        column=settings.column,
        authority=token.authority,
        now=context.clock(),
    )
    if batch.problems:
        raise _refusal(batch, raws)
    if not batch.fresh:  # an empty batch, which CloudEvents allows: nothing to publish
        return _result(batch, [], context.metrics, token.authority)
    try:
        if held := await _locked(batch, context.bus):
            raise _lock_refusal(held, raws)
        already_stored = await context.bus.publish([c.message for c in batch.fresh])
    except Conflicts as conflicts:
        raise _conflict(batch, raws, conflicts) from None
    except BusUnavailable as exc:
        raise ProblemError(
            503,
            "bus_unavailable",
            f"the event bus cannot take the events now: {exc}. Retry with the same ids; "
            "events that did land are not stored twice",
            headers={"Retry-After": str(settings.retry_after_seconds)},
            rejected_types=[raw_type(r) for r in raws],
        ) from exc
    return _result(batch, already_stored, context.metrics, token.authority)


def _authenticate(
    tokens: TokenStore, credentials: HTTPAuthorizationCredentials | None
) -> TokenRecord:
    if credentials is None:
        raise ProblemError(
            401,
            "unauthenticated",
            "send the authority's token as Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="cotn"'},
        )
    record = tokens.record_of(credentials.credentials)
    if record is None:
        raise ProblemError(
            401,
            "unauthenticated",
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="cotn", error="invalid_token"'},
        )
    return record


def _refuse_office(token: TokenRecord) -> None:
    """An office token sends no events: the office's reviews go through the aggregator."""
    if token.is_office:
        reason = (
            f"is the programme office's token ({token.authority}): office tokens review "
            "returns through the aggregator's POST /v1/reviews and send no events"
        )
        raise ProblemError(
            403,
            "forbidden",
            f"the token {reason}",
            errors=[Problem("Authorization", reason, status=403)],
        )


async def _locked(batch: CheckedBatch, bus: EventBus) -> list[tuple[CheckedEvent, Lock]]:
    """The events of the batch whose return is locked (from the watcher's memory), but for
    resends: an event accepted before the lock, sent again with the same content, is
    published and answered under ``duplicates`` like any resend (stored once; kept aside
    should it never have landed). The claims are read only when an event is locked."""
    held = [
        (event, lock)
        for event in batch.fresh
        if event.target is not None and (lock := bus.locks.lock_of(event.target)) is not None
    ]
    if not held:
        return held
    resent = await bus.resent([event.message for event, _ in held])
    return [pair for pair, again in zip(held, resent, strict=True) if not again]


def _lock_refusal(held: list[tuple[CheckedEvent, Lock]], raws: Sequence[Any]) -> ProblemError:
    """The 409 for the events whose return is locked."""
    return ProblemError(
        409,
        LOCKED,
        f"{len(held)} of {len(raws)} events are for returns the programme office has locked "
        f"(the first: {held[0][1].describe()}); the office can reopen a return; nothing was "
        "published",
        errors=[lock_problem(lock).at(event.index, event.id) for event, lock in held],
        rejected_types=[raw_type(r) for r in raws],
        with_codes=True,
    )


def _note_use(context: IngestContext, token: TokenRecord) -> None:
    """Remember the token's use; write the uses out when a flush is due.

    On the event loop, on purpose: a small file once a minute, and no thread can then race
    the in-memory map.
    """
    context.usage.touch(token.token_id)
    if context.usage.due():
        try:
            context.usage.flush()
        except OSError as exc:  # bookkeeping only: never refuse an event over it
            log.warning("cannot write %s: %s", context.usage.path, exc)


def _throttle(
    context: IngestContext, token: TokenRecord, cost: int, rejected_types: Sequence[str] = ()
) -> None:
    """Charge ``cost`` events to the token, or refuse the request with 429 and Retry-After."""
    if cost <= 0:
        return
    wait = context.limiter.take(token.token_id, cost)
    if wait:
        settings = context.settings
        raise ProblemError(
            429,
            "rate_limited",
            f"token {token.token_id} of {token.authority} may send "
            f"{settings.rate_limit_per_second:g} events a second, "
            f"{settings.rate_limit_burst} at once; retry this request after {wait} s",
            headers={"Retry-After": str(wait)},
            rejected_types=rejected_types,
        )


def _events_of(mode: Mode, decoded: Any, headers: Mapping[str, str], max_batch: int) -> list[Any]:
    if mode is Mode.STRUCTURED:
        return [decoded]
    if mode is Mode.BINARY:
        return [binary_event(headers, decoded)]
    if not isinstance(decoded, list):
        reason = "must be a JSON array of events"
        raise ProblemError(422, "invalid", f"a batch {reason}", errors=[Problem("(batch)", reason)])
    if len(decoded) > max_batch:
        raise ProblemError(
            413,
            "too_large",
            f"a batch holds at most {max_batch} events, this one has {len(decoded)}: split it",
        )
    return decoded


def _refusal(batch: CheckedBatch, raws: Sequence[Any]) -> ProblemError:
    failing = len({p.index for p in batch.problems})
    if batch.status == 403:
        reason, what = "forbidden", "may not be sent with this token"
    else:
        reason, what = "invalid", "are invalid"
    return ProblemError(
        batch.status,
        reason,
        f"{failing} of {len(raws)} events {what}; nothing was published",
        errors=batch.problems,
        rejected_types=[raw_type(r) for r in raws],
    )


def _conflict(batch: CheckedBatch, raws: Sequence[Any], conflicts: Conflicts) -> ProblemError:
    held = sorted(conflicts.held.items())
    errors = [
        Problem(
            "id",
            f"this source and id name an event accepted before with other content (its time "
            f"{claim.time}): an id names one event for ever, so send a correction under a new id",
            status=409,
        ).at(batch.fresh[position].index, batch.fresh[position].id)
        for position, claim in held
    ]
    return ProblemError(
        409,
        "conflict",
        f"{len(errors)} of {len(raws)} events reuse the id of an event accepted before with "
        f"other content (the first, of time {held[0][1].time}); nothing was published",
        errors=errors,
        rejected_types=[raw_type(r) for r in raws],
    )


def _result(
    batch: CheckedBatch, already_stored: list[bool], metrics: IngestMetrics, authority: str
) -> IngestResult:
    outcomes = [
        (c.index, c.id, c.type, "duplicate" if stored else "accepted")
        for c, stored in zip(batch.fresh, already_stored, strict=True)
    ]
    outcomes += [(c.index, c.id, c.type, "duplicate") for c in batch.repeats]
    outcomes.sort()
    for (event_type, outcome), n in Counter((t, o) for _, _, t, o in outcomes).items():
        metrics.count_events(authority, event_type, outcome, n)
    return IngestResult(
        accepted=[i for _, i, _, o in outcomes if o == "accepted"],
        duplicates=[i for _, i, _, o in outcomes if o == "duplicate"],
    )


def _count_refusal(metrics: IngestMetrics, problem: ProblemError, authority: str) -> None:
    metrics.count_rejection(authority, problem.reason)
    for event_type, n in Counter(problem.rejected_types).items():
        metrics.count_events(authority, event_type, "rejected", n)


@router.get("/healthz", summary="Liveness: the process answers", responses=UNKNOWN_QUERY)
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves HTTP, whatever the state of NATS."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: connected to NATS, the events stream answers, the locks are loaded",
    responses={503: {"description": "Not ready; `reason` says why"}, **UNKNOWN_QUERY},
)
async def readyz(context: Context) -> JSONResponse:
    """200 when events can be accepted, 503 with the reason otherwise."""
    reason = await context.bus.unready_reason()
    if reason is not None:
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response, responses=UNKNOWN_QUERY
)
async def metrics(context: Context) -> Response:
    """The service's own registry in the Prometheus text format."""
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
