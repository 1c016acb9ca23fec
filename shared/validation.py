"""Checks of one event against the catalogue, the sender's authority and a clock.

Pure functions: no broker, no database. A column service calls :func:`check_event` for
each event of a request; every problem names the field and the reason, and carries the
HTTP status it deserves (403 for rights, 422 for content).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from shared.catalogue import Catalogue
from shared.events import EVENT_TYPES, KpiEvent, MilestoneEvent

MAX_FUTURE = timedelta(minutes=5)


@dataclass(frozen=True)
class Problem:
    """One reason an event was refused."""

    field: str
    reason: str
    status: int = 422
    index: int | None = None
    id: str | None = None

    def at(self, index: int, event_id: str | None) -> Problem:
        return Problem(self.field, self.reason, self.status, index, event_id)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "field": self.field, "reason": self.reason}


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """Name each pydantic error by its field path, without the discriminator's tag."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if str(p) not in EVENT_TYPES]
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            field = "type"
            reason = f"must be one of {', '.join(EVENT_TYPES)}"
            if err["type"] == "union_tag_not_found":
                reason = "is required"
        else:
            field = ".".join(loc) or "(event)"
            reason = _reason(err)
        problems.append(Problem(field, reason))
    return problems


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not an attribute of this event type"
    return str(err["msg"]).removeprefix("Value error, ")


def resolve(event: MilestoneEvent | KpiEvent, catalogue: Catalogue, column: str) -> str | None:
    """The proposal an accepted event is filed under in ``column`` (None if it has none)."""
    if isinstance(event, MilestoneEvent):
        proposal = event.data.proposal
        return proposal if catalogue.column_of.get(proposal) == column else None
    kpi = catalogue.kpi_by_id.get(event.data.kpi)
    if kpi is None:
        return None
    return next((p for p in kpi.evidences if catalogue.column_of.get(p) == column), None)


def check_event(
    event: MilestoneEvent | KpiEvent,
    *,
    catalogue: Catalogue,
    column: str,
    authority: str,
    now: datetime,
) -> list[Problem]:
    """Every reason this column service must refuse ``event`` from ``authority`` at ``now``."""
    problems: list[Problem] = []
    if event.source != authority:
        problems.append(
            Problem("source", f"is {event.source!r} but the token belongs to {authority!r}", 403)
        )
    if event.time > now + MAX_FUTURE:
        problems.append(Problem("time", "is more than 5 minutes in the future"))
    if isinstance(event, MilestoneEvent):
        problems += _check_milestone(event, catalogue, column, authority)
    else:
        problems += _check_kpi(event, catalogue, column, authority)
    return problems


def _check_milestone(
    event: MilestoneEvent, catalogue: Catalogue, column: str, authority: str
) -> list[Problem]:
    data = event.data
    proposal = catalogue.proposal_by_id.get(data.proposal)
    if proposal is None:
        return [Problem("data.proposal", f"unknown proposal {data.proposal!r}")]
    owner = catalogue.column_of[proposal.id]
    if owner != column:
        return [
            Problem(
                "data.proposal",
                f"proposal {proposal.id!r} belongs to the {owner!r} column: "
                f"post it to the {owner} column service",
            )
        ]
    problems = []
    if proposal.milestone(data.milestone) is None:
        known = ", ".join(m.id for m in proposal.milestones)
        problems.append(
            Problem(
                "data.milestone",
                f"unknown milestone {data.milestone!r} of {proposal.id} (known: {known})",
            )
        )
    if authority not in proposal.partners:
        problems.append(
            Problem(
                "data.proposal", f"{authority!r} is not a partner of proposal {proposal.id}", 403
            )
        )
    return problems


def _check_kpi(event: KpiEvent, catalogue: Catalogue, column: str, authority: str) -> list[Problem]:
    data = event.data
    kpi = catalogue.kpi_by_id.get(data.kpi)
    if kpi is None:
        return [Problem("data.kpi", f"unknown KPI {data.kpi!r}")]
    problems = []
    columns = sorted({catalogue.column_of[p] for p in kpi.evidences})
    if column not in columns:
        problems.append(
            Problem(
                "data.kpi",
                f"KPI {kpi.id!r} evidences proposals of the {', '.join(columns)} column: "
                f"post it to that column service",
            )
        )
    if data.unit is not None and data.unit != kpi.unit:
        problems.append(
            Problem("data.unit", f"is {data.unit!r} but KPI {kpi.id} is in {kpi.unit!r}")
        )
    if authority not in kpi.reporters:
        problems.append(Problem("data.kpi", f"{authority!r} may not report KPI {kpi.id}", 403))
    return problems
