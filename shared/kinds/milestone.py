"""``org.cotn.milestone.v1``: a partner reports the status of one milestone of a proposal.

Filed under the proposal it names, on ``cotn.events.<column>.<proposal>.milestone``; folds
into ``milestone_state``: per (proposal, milestone), the newest status by (event time,
stream sequence).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from pydantic import HttpUrl
from sqlmodel import Field, SQLModel

from shared.catalogue import Catalogue, Proposal
from shared.events import CloudEvent, Frozen, Note, Ref
from shared.kinds.base import EventKind, Log, Projection
from shared.periods import month_of
from shared.problems import Problem
from shared.reviews import milestone_target
from shared.tables import Id, table_of, utc

TYPE = "org.cotn.milestone.v1"

MilestoneStatus = Literal["not_started", "in_progress", "at_risk", "blocked", "completed"]
MILESTONE_STATUSES: tuple[str, ...] = MilestoneStatus.__args__  # type: ignore[attr-defined]


class MilestoneData(Frozen):
    proposal: Ref
    milestone: Ref
    status: MilestoneStatus
    note: Note | None = None
    evidence_url: HttpUrl | None = None


class MilestoneEvent(CloudEvent):
    type: Literal["org.cotn.milestone.v1"]
    data: MilestoneData


class MilestoneStateRow(SQLModel, table=True):
    """The newest status of each milestone, by (event time, stream sequence)."""

    __tablename__ = "milestone_state"

    proposal: str = Field(primary_key=True, max_length=Id)
    milestone: str = Field(primary_key=True, max_length=Id)
    status: str = Field(max_length=32)
    event_time: datetime = utc()
    stream_seq: int = Field(sa_type=sa.BigInteger)
    source: str = Field(max_length=Id)
    event_id: str = Field(max_length=256)
    note: str | None = Field(default=None, sa_type=sa.Text)
    version: int = Field(
        default=0,
        sa_type=sa.BigInteger,
        index=True,
        description="The store's version of the commit that last wrote the row",
    )


MILESTONE_STATE = table_of(MilestoneStateRow)


def proposal_problems(
    proposal_id: str, catalogue: Catalogue, column: str, authority: str | None
) -> tuple[Proposal | None, list[Problem]]:
    """The proposal an event names (None if unknown or another column's) and the problems of
    naming it: unknown, another column's, or (``authority`` given) not the sender's."""
    proposal = catalogue.proposal_by_id.get(proposal_id)
    if proposal is None:
        return None, [
            Problem("data.proposal", f"unknown proposal {proposal_id!r}", code="unknown_proposal")
        ]
    owner = catalogue.column_of[proposal.id]
    if owner != column:
        return None, [
            Problem(
                "data.proposal",
                f"proposal {proposal.id!r} belongs to the {owner!r} column: "
                f"post it to the {owner} column service",
                code="bad_subject",
            )
        ]
    if authority is not None and authority not in proposal.partners:
        return proposal, [
            Problem(
                "data.proposal", f"{authority!r} is not a partner of proposal {proposal.id}", 403
            )
        ]
    return proposal, []


class OfAProposal(EventKind):
    """A kind whose data names its proposal (``data.proposal``): filed under it."""

    def proposal(self, event: Any, *, catalogue: Catalogue, column: str) -> str:
        return str(event.data.proposal)

    def files_under(self, event: Any, proposal: str, catalogue: Catalogue) -> bool:
        return bool(event.data.proposal == proposal)


class Milestones(OfAProposal):
    type: ClassVar[str] = TYPE
    name: ClassVar[str] = "milestone"
    model: ClassVar[builtins.type[CloudEvent]] = MilestoneEvent
    description: ClassVar[str] = "A milestone's status, reported by a partner of its proposal"
    codes: ClassVar[tuple[str, ...]] = ("unknown_proposal", "unknown_milestone", "bad_subject")

    def check(
        self, event: Any, *, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        data = event.data
        proposal, problems = proposal_problems(data.proposal, catalogue, column, authority)
        if proposal is not None and proposal.milestone(data.milestone) is None:
            known = ", ".join(m.id for m in proposal.milestones)
            problems.insert(
                0,
                Problem(
                    "data.milestone",
                    f"unknown milestone {data.milestone!r} of {proposal.id} (known: {known})",
                    code="unknown_milestone",
                ),
            )
        return problems

    def row(self, event: Any) -> dict[str, Any]:
        return {
            "milestone": event.data.milestone,
            "period": month_of(event.time),
            "target": milestone_target(event.data.proposal, event.data.milestone),
        }

    def projection(self, log: Log) -> Projection:
        c = log.c
        return Projection(
            MILESTONE_STATE,
            (c.proposal, c.milestone),
            TYPE,
            [c.proposal, c.milestone, c.data["status"].as_string().label("status"),
             c.event_time, c.stream_seq, c.source, c.event_id,
             c.data["note"].as_string().label("note")],
        )  # fmt: skip

    def known(self, catalogue: Catalogue) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        pairs: list[tuple[str, ...]] = [
            (p.id, m.id) for p in catalogue.proposals for m in p.milestones
        ]
        return ("proposal", "milestone"), pairs


KIND = Milestones()
