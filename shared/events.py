"""The envelope of the events authority systems send: CloudEvents 1.0, structured JSON.

The models are closed (``extra="forbid"``) and frozen. Nothing here invents a missing
``id`` or ``time``: both are required. Each kind of event (its ``type`` and ``data``) is a
module of :mod:`shared.kinds`; checks that need the catalogue, the sender and a clock live
there and in :mod:`shared.validation`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
)

MAX_NOTE = 2000
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"


def _finite_number(value: Any) -> Any:
    # JSON true/false and numeric strings are not numbers here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("is too large for a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


FiniteNumber = Annotated[float, BeforeValidator(_finite_number)]
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _plain_text(value: str) -> str:
    # Line breaks and tabs are kept; other control characters (NUL among them, which
    # PostgreSQL cannot store) are refused.
    if _CONTROL.search(value):
        raise ValueError("must be plain text without control characters")
    return value


def _one_line(value: str) -> str:
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError("must be one line of text without control characters")
    return value


# RFC 3339 as CloudEvents requires: without this, pydantic would also take a number (or a
# numeric string) as seconds since 1970, and a client's unit mistake would be stored.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: Any) -> Any:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp with its offset, e.g. 2025-07-01T09:30:00Z")
    return value


Note = Annotated[StrictStr, Field(max_length=MAX_NOTE), AfterValidator(_plain_text)]
Line = Annotated[StrictStr, AfterValidator(_one_line)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
Ref = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class Frozen(BaseModel):
    """Closed and immutable: the shape of every event model."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CloudEvent(Frozen):
    """The CloudEvents 1.0 envelope every kind shares; a kind adds its ``type`` and ``data``."""

    specversion: Literal["1.0"]
    id: Annotated[StrictStr, Field(min_length=1, max_length=256, pattern=_NO_CONTROL)]
    source: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    time: Timestamp
    datacontenttype: Literal["application/json"] | None = None
    # Optional attributes are carried to the store: bounded, one line, no control characters.
    dataschema: Annotated[Line, Field(max_length=2048)] | None = None
    subject: Annotated[Line, Field(max_length=256)] | None = None
    traceparent: Annotated[Line, Field(max_length=128)] | None = None
    tracestate: Annotated[Line, Field(max_length=512)] | None = None
    # Narrowed by each kind (a Literal type, its data model); last, as every event is written.
    type: str
    data: Frozen

    @property
    def key(self) -> tuple[str, str]:
        """The event's identity: sending the same pair again stores nothing new."""
        return (self.source, self.id)
