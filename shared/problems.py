"""Why an event is refused: one record for the column services and the consumer.

A column service answers each :class:`Problem` to the client (its ``status`` is the HTTP
status it deserves, 403 for rights and 422 for content); the consumer dead-letters a
stored message by the problem's ``code``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    """One reason an event was refused."""

    field: str
    reason: str
    status: int = 422
    index: int | None = None
    id: str | None = None
    code: str = "invalid_event"
    """The dead-letter reason, should the consumer meet the same problem."""

    def at(self, index: int, event_id: str | None) -> Problem:
        """This problem, placed at event ``index`` (with ``event_id``) of a request."""
        return replace(self, index=index, id=event_id)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "field": self.field, "reason": self.reason}


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """Name each pydantic error by its field path."""
    return [
        Problem(".".join(str(p) for p in err["loc"]) or "(event)", _reason(err))
        for err in exc.errors()
    ]


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not an attribute of this event type"
    return str(err["msg"]).removeprefix("Value error, ")
