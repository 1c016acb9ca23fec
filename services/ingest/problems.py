"""Errors of the column service as RFC 9457 problem details (``application/problem+json``).

Each refusal has a short reason slug; it names the problem type (``urn:cotn:problem:<slug>``)
and labels ``cotn_ingest_rejections_total``, so a dashboard and a client see the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.problems import Problem

PROBLEM_JSON = "application/problem+json"

TITLES = {
    "not_json": "Body is not JSON",
    "too_large": "Content too large",
    "unsupported_media_type": "Unsupported media type",
    "unauthenticated": "Unauthenticated",
    "forbidden": "Forbidden",
    "rate_limited": "Too many events",
    "misdirected": "Misdirected request",
    "invalid": "Invalid event",
    "conflict": "Id already used by another event",
    "locked": "Return locked by the programme office",
    "bus_unavailable": "Event bus unavailable",
}
REASONS = tuple(TITLES)


class EventError(BaseModel):
    """One reason one event of the request was refused."""

    index: int | None = Field(description="Position in the batch; 0 for a single event")
    id: str | None = Field(description="The event's id where it is known")
    field: str = Field(description="Dotted path of the attribute, e.g. data.proposal")
    reason: str
    code: str | None = Field(
        default=None,
        exclude_if=lambda code: code is None,
        description="Why, as a word a client can act on, where the refusal gives one: "
        "`locked` (the return is approved or verified)",
    )


class ProblemDetails(BaseModel):
    """RFC 9457 problem details with the events that failed."""

    type: str = Field(description="urn:cotn:problem:<reason>, or about:blank")
    title: str
    status: int
    detail: str
    errors: list[EventError] = Field(default_factory=list)


class ProblemError(Exception):
    """A refusal of the whole request; ``rejected_types`` are the types of its events, if known."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        errors: Sequence[Problem] = (),
        headers: dict[str, str] | None = None,
        rejected_types: Sequence[str] = (),
        with_codes: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.rejected_types = list(rejected_types)
        # Older refusals keep the error shape clients already parse; newer ones name codes.
        self.with_codes = with_codes

    def details(self) -> ProblemDetails:
        return ProblemDetails(
            type=f"urn:cotn:problem:{self.reason}",
            title=TITLES[self.reason],
            status=self.status,
            detail=self.detail,
            errors=[
                EventError(**p.as_dict(), code=p.code if self.with_codes else None)
                for p in self.errors
            ],
        )


def problem_response(problem: ProblemError) -> JSONResponse:
    """The HTTP answer for a refusal."""
    return JSONResponse(
        problem.details().model_dump(),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


async def problem_handler(request: Request, problem: ProblemError) -> JSONResponse:
    """A refusal raised outside a handler's own ``try`` (a router dependency's)."""
    return problem_response(problem)


async def http_exception_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Framework errors (404, 405, ...) in the same format as the service's own."""
    body = ProblemDetails(
        type="about:blank",
        title=_phrase(exc.status_code),
        status=exc.status_code,
        detail=str(exc.detail),
    )
    return JSONResponse(
        body.model_dump(),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=PROBLEM_JSON,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
