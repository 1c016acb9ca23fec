"""A request's events checked whole: every problem of every event, or what to publish.

Pure: catalogue, column, sender and clock come in; no bus, no HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.ingest.claims import Claim
from services.ingest.metrics import UNKNOWN_TYPE
from services.ingest.publisher import BusMessage
from shared.bus import event_subject, msg_id
from shared.catalogue import Catalogue
from shared.events import CloudEvent
from shared.kinds import KINDS
from shared.problems import Problem
from shared.validation import check_event


@dataclass(frozen=True, slots=True)
class CheckedEvent:
    index: int
    id: str
    type: str
    message: BusMessage
    target: str | None = None
    """The return it belongs to (shared/reviews.py), which a lock may hold; None for kinds
    the office does not review."""


@dataclass
class CheckedBatch:
    fresh: list[CheckedEvent] = field(default_factory=list)
    repeats: list[CheckedEvent] = field(default_factory=list)
    """Events with the same (source, id) as an earlier one of the batch: published once."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def status(self) -> int:
        """403 when any problem is about rights (they come first), else 422."""
        return 403 if any(p.status == 403 for p in self.problems) else 422


def check_events(
    raws: Sequence[Any], *, catalogue: Catalogue, column: str, authority: str, now: datetime
) -> CheckedBatch:
    """Validate each decoded event of a request, sent by ``authority``, at ``now``."""
    batch = CheckedBatch()
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(raws):
        event, problems = KINDS.problems(raw)
        if event is None:
            batch.problems += [p.at(index, raw_id(raw)) for p in problems]
            continue
        found = check_event(event, catalogue=catalogue, column=column, authority=authority, now=now)
        if found:
            batch.problems += [p.at(index, event.id) for p in found]
            continue
        checked = _checked(index, event, catalogue, column)
        if event.key in seen:
            batch.repeats.append(checked)
        else:
            seen.add(event.key)
            batch.fresh.append(checked)
    return batch


def _checked(index: int, event: CloudEvent, catalogue: Catalogue, column: str) -> CheckedEvent:
    kind = KINDS.of(event)
    proposal = kind.proposal(event, catalogue=catalogue, column=column)
    message = BusMessage(
        subject=event_subject(column, proposal, kind.name),
        msg_id=msg_id(event.source, event.id),
        payload=event.model_dump_json(exclude_none=True).encode(),
        claim=Claim(
            digest=event.digest, time=event.time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        ),
    )
    return CheckedEvent(index, event.id, event.type, message, kind.row(event).get("target"))


def raw_id(raw: Any) -> str | None:
    """The id of an undecodable event where it has one, so the client can find it."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def raw_type(raw: Any) -> str:
    """The event type as a bounded metric label."""
    value = raw.get("type") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value in KINDS.by_type else UNKNOWN_TYPE
