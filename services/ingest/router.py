"""HTTP handlers of a column service: ``POST /v1/events`` and the probes.

A request is checked in this order, each step answering with its own status: token (401),
content type (415), size (413), JSON (400), events (403 before 422), then the bus (503).
Unauthenticated clients therefore never cost a body read.
"""

from __future__ import annotations

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
from services.ingest.checking import CheckedBatch, check_events, raw_type
from services.ingest.decoding import (
    Mode,
    binary_event,
    check_declared_length,
    content_mode,
    decode_json,
    read_capped,
)
from services.ingest.metrics import IngestMetrics
from services.ingest.problems import ProblemError, problem_response
from services.ingest.publisher import BusUnavailable, EventBus
from services.ingest.settings import IngestSettings
from shared.catalogue import Catalogue
from shared.tokens import TokenStore
from shared.validation import Problem


@dataclass(frozen=True)
class IngestContext:
    """What the handlers need, built once per app by ``create_app``."""

    settings: IngestSettings
    catalogue: Catalogue
    tokens: TokenStore
    bus: EventBus
    metrics: IngestMetrics
    clock: Callable[[], datetime]


class IngestResult(BaseModel):
    accepted: list[str]
    duplicates: list[str]


def ingest_context(request: Request) -> IngestContext:
    context: IngestContext = request.app.state.ingest
    return context


Context = Annotated[IngestContext, Depends(ingest_context)]
Credentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="A token issued by `cotn token create`")),
]

router = APIRouter()


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
        403: openapi.problem("The token's authority may not send an event of the request"),
        413: openapi.problem("The body or the batch is too large"),
        415: openapi.problem("Not a CloudEvents JSON content type"),
        422: openapi.problem("An event is invalid; nothing was published"),
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
    try:
        result = await _ingest(request, context, credentials)
    except ProblemError as problem:
        _count_refusal(context.metrics, problem)
        return problem_response(problem)
    finally:
        context.metrics.observe_request(perf_counter() - started)
    return JSONResponse(result.model_dump(), status_code=202)


async def _ingest(
    request: Request, context: IngestContext, credentials: HTTPAuthorizationCredentials | None
) -> IngestResult:
    settings = context.settings
    authority = _authenticate(context.tokens, credentials)
    mode = content_mode(request.headers.get("content-type"), request.headers)
    check_declared_length(request.headers.get("content-length"), settings.max_body_bytes)
    body = await read_capped(request.stream(), settings.max_body_bytes)
    raws = _events_of(mode, decode_json(body), request.headers, settings.max_batch)
    batch = check_events(
        raws,
        catalogue=context.catalogue,
        column=settings.column,
        authority=authority,
        now=context.clock(),
    )
    if batch.problems:
        raise _refusal(batch, raws)
    try:
        already_stored = await context.bus.publish([c.message for c in batch.fresh])
    except BusUnavailable as exc:
        raise ProblemError(
            503,
            "bus_unavailable",
            f"the event bus cannot take the events now: {exc}. Retry with the same ids; "
            "events that did land are not stored twice",
            headers={"Retry-After": str(settings.retry_after_seconds)},
            rejected_types=[raw_type(r) for r in raws],
        ) from exc
    return _result(batch, already_stored, context.metrics)


def _authenticate(tokens: TokenStore, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise ProblemError(
            401,
            "unauthenticated",
            "send the authority's token as Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="cotn"'},
        )
    authority = tokens.authority_of(credentials.credentials)
    if authority is None:
        raise ProblemError(
            401,
            "unauthenticated",
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="cotn", error="invalid_token"'},
        )
    return authority


def _events_of(mode: Mode, decoded: Any, headers: Mapping[str, str], max_batch: int) -> list[Any]:
    if mode is Mode.STRUCTURED:
        return [decoded]
    if mode is Mode.BINARY:
        return [binary_event(headers, decoded)]
    if not isinstance(decoded, list) or not decoded:
        reason = "must be a non-empty JSON array of events"
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


def _result(
    batch: CheckedBatch, already_stored: list[bool], metrics: IngestMetrics
) -> IngestResult:
    outcomes = [
        (c.index, c.id, c.type, "duplicate" if stored else "accepted")
        for c, stored in zip(batch.fresh, already_stored, strict=True)
    ]
    outcomes += [(c.index, c.id, c.type, "duplicate") for c in batch.repeats]
    outcomes.sort()
    for (event_type, outcome), n in Counter((t, o) for _, _, t, o in outcomes).items():
        metrics.count_events(event_type, outcome, n)
    return IngestResult(
        accepted=[i for _, i, _, o in outcomes if o == "accepted"],
        duplicates=[i for _, i, _, o in outcomes if o == "duplicate"],
    )


def _count_refusal(metrics: IngestMetrics, problem: ProblemError) -> None:
    metrics.count_rejection(problem.reason)
    for event_type, n in Counter(problem.rejected_types).items():
        metrics.count_events(event_type, "rejected", n)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves HTTP, whatever the state of NATS."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: connected to NATS and the events stream answers",
    responses={503: {"description": "Not ready; `reason` says why"}},
)
async def readyz(context: Context) -> JSONResponse:
    """200 when events can be accepted, 503 with the reason otherwise."""
    reason = await context.bus.unready_reason()
    if reason is not None:
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(context: Context) -> Response:
    """The service's own registry in the Prometheus text format."""
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
