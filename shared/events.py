"""The envelope of the events authority systems send: CloudEvents 1.0, structured JSON.

The models are closed (``extra="forbid"``) and frozen. Nothing here invents a missing
``id`` or ``time``: both are required. Each kind of event (its ``type`` and ``data``) is a
module of :mod:`shared.kinds`; checks that need the catalogue, the sender and a clock live
there and in :mod:`shared.validation`.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC
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


MAX_EXTENSIONS = 16
MAX_EXTENSION_TEXT = 1024
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
INT32 = range(-(2**31), 2**31)


def extension_problem(name: str, value: Any) -> str | None:
    """Why ``name: value`` is no CloudEvents extension attribute this service takes, or None.

    Names are lower-case letters and digits, at most 20; values are of the CloudEvents type
    system as JSON carries it: Boolean, Integer (32-bit) or a string (String, Binary as
    base64, URI, URI-reference, Timestamp), one line of at most 1024 characters.
    """
    if not EXTENSION_NAME.match(name):
        return (
            "is not an attribute of this event type, nor an extension attribute's name "
            "(lower-case letters and digits, at most 20)"
        )
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if value in INT32 else "is an Integer outside the 32-bit range"
    if isinstance(value, str):
        if len(value) > MAX_EXTENSION_TEXT:
            return f"is longer than {MAX_EXTENSION_TEXT} characters"
        if re.search(r"[\x00-\x1f\x7f]", value):
            return "must be one line of text without control characters"
        return None
    return "must be a Boolean, an Integer or a string (the CloudEvents type system)"


def _extension_schema(schema: dict[str, Any]) -> None:
    """Document the extension attributes :func:`extension_problem` accepts, and no others."""
    schema["additionalProperties"] = False
    # A key matching both properties and patternProperties must satisfy both: the
    # envelope's own names are left out of the extensions' pattern.
    names = "|".join(schema.get("properties", {}))
    schema["patternProperties"] = {
        f"^(?!({names})$)[a-z0-9]{{1,20}}$": {
            "description": "An extension attribute (CloudEvents type system)",
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "minimum": INT32.start, "maximum": INT32.stop - 1},
                {
                    "type": "string",
                    "maxLength": MAX_EXTENSION_TEXT,
                    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
                },
                {"type": "null"},
            ],
        }
    }
    schema["maxProperties"] = len(schema.get("properties", {})) + MAX_EXTENSIONS


class CloudEvent(Frozen):
    """The CloudEvents 1.0 envelope every kind shares; a kind adds its ``type`` and ``data``.

    Extension attributes are kept (``model_extra``), once :func:`extension_problem` found
    none at fault: :meth:`shared.kinds.base.Registry.parse` checks them before the model.
    """

    model_config = ConfigDict(frozen=True, extra="allow", json_schema_extra=_extension_schema)

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
    def extensions(self) -> dict[str, Any]:
        """The event's extension attributes, by name."""
        return dict(self.model_extra or {})

    @property
    def key(self) -> tuple[str, str]:
        """The event's identity: sending the same pair again stores nothing new."""
        return (self.source, self.id)

    @property
    def digest(self) -> str:
        """SHA-256 of the event's canonical JSON: equal for the same event however it was
        written (any offset of the same instant, optional attributes null or left out).

        The column services compare it with the claim of an earlier (``source``, ``id``);
        the aggregator with the stored event's."""
        event = self
        if self.time.utcoffset():
            event = self.model_copy(update={"time": self.time.astimezone(UTC)})
        return hashlib.sha256(event.model_dump_json(exclude_none=True).encode()).hexdigest()
