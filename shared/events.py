"""The events authority systems send: CloudEvents 1.0, structured JSON, two types.

The models are closed (``extra="forbid"``) and frozen. Nothing here invents a missing
``id`` or ``time``: both are required. Catalogue and authorisation checks, which need
the catalogue, the sender and a clock, live in :mod:`shared.validation`.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    StrictStr,
    TypeAdapter,
)

MILESTONE_TYPE = "org.cotn.milestone.v1"
KPI_TYPE = "org.cotn.kpi.v1"
EVENT_TYPES = (MILESTONE_TYPE, KPI_TYPE)
KIND_OF_TYPE = {MILESTONE_TYPE: "milestone", KPI_TYPE: "kpi"}

MilestoneStatus = Literal["not_started", "in_progress", "at_risk", "blocked", "completed"]
MILESTONE_STATUSES: tuple[str, ...] = MilestoneStatus.__args__  # type: ignore[attr-defined]

MAX_NOTE = 2000
PERIOD_PATTERN = r"^\d{4}(-Q[1-4]|-(0[1-9]|1[0-2]))?$"
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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MilestoneData(_Frozen):
    proposal: Ref
    milestone: Ref
    status: MilestoneStatus
    note: Note | None = None
    evidence_url: HttpUrl | None = None


class KpiData(_Frozen):
    kpi: Ref
    value: FiniteNumber
    period: Annotated[StrictStr, Field(pattern=PERIOD_PATTERN)]
    unit: StrictStr | None = Field(default=None, description="If given, must be the KPI's unit")
    note: Note | None = None


class _CloudEvent(_Frozen):
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

    @property
    def key(self) -> tuple[str, str]:
        """The event's identity: sending the same pair again stores nothing new."""
        return (self.source, self.id)


class MilestoneEvent(_CloudEvent):
    type: Literal["org.cotn.milestone.v1"]
    data: MilestoneData

    @property
    def proposal(self) -> str:
        return self.data.proposal


class KpiEvent(_CloudEvent):
    type: Literal["org.cotn.kpi.v1"]
    data: KpiData


Event = Annotated[MilestoneEvent | KpiEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[MilestoneEvent | KpiEvent] = TypeAdapter(Event)


def parse_event(obj: Any) -> MilestoneEvent | KpiEvent:
    """Validate one decoded JSON object as an event (raises pydantic.ValidationError)."""
    return EVENT_ADAPTER.validate_python(obj)


def kind_of(event: MilestoneEvent | KpiEvent) -> str:
    return KIND_OF_TYPE[event.type]


def period_end(period: str) -> date:
    """The last day a KPI period covers: ``2025`` -> 2025-12-31, ``2025-Q3`` -> 2025-09-30."""
    if not re.fullmatch(PERIOD_PATTERN, period):
        raise ValueError(f"{period!r} is not a year, quarter or month")
    year = int(period[:4])
    if len(period) == 4:
        return date(year, 12, 31)
    if period[5] == "Q":
        month = int(period[6]) * 3
    else:
        month = int(period[5:7])
    if month == 12:
        return date(year, 12, 31)
    return date.fromordinal(date(year, month + 1, 1).toordinal() - 1)
