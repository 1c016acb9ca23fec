"""OpenAPI for ``POST /v1/events``, generated from the event and problem models.

The handler reads the raw body itself (to cap its size and decode it strictly), so FastAPI
cannot infer the request body: it is described here and the schemas it refers to are added
to the document's components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.ingest.decoding import BATCH_TYPE
from services.ingest.problems import PROBLEM_JSON, ProblemDetails
from shared.kinds import KINDS

REF = "#/components/schemas/{model}"


def _components() -> dict[str, Any]:
    """The event schemas of the kinds registered now, and the problem schema."""
    event = KINDS.json_schema(ref_template=REF)
    problem = ProblemDetails.model_json_schema(ref_template=REF)
    return {
        **event.pop("$defs"),
        **problem.pop("$defs"),
        "CloudEvent": {**event, "title": "CloudEvent"},
        "ProblemDetails": problem,
    }


EVENT_REF = {"$ref": REF.format(model="CloudEvent")}

REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": (
        "One CloudEvents 1.0 event in structured mode, or a batch (a JSON array of at most "
        "`max_batch` events, 500 by default). Binary mode is accepted too: the attributes in "
        "`ce-*` headers (`ce-specversion`, `ce-id`, `ce-source`, `ce-type`, `ce-time`) and the "
        "event's data as an `application/json` body. The body is at most `max_body_bytes` "
        "(4 MiB by default) of UTF-8 JSON without duplicate keys."
    ),
    "content": {
        "application/cloudevents+json": {"schema": EVENT_REF},
        "application/json": {"schema": EVENT_REF},
        BATCH_TYPE: {"schema": {"type": "array", "items": EVENT_REF}},
    },
}


def problem(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An error response of the operation, as RFC 9457 problem details."""
    doc: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="ProblemDetails")}}},
    }
    if headers:
        doc["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return doc


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the event and problem schemas."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
