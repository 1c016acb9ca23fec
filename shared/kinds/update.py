"""``org.cotn.update.v1``: a partner's progress update that says nothing moved.

A progress update of a proposal is any milestone event, or one of these: "no change", with
an optional note, for the reporting period it names (by default the month of its ``time``).
It meets a progress-update obligation (``updates`` in the catalogue), so an authority that
reports is told apart from one that is silent; it moves no milestone, so a proposal whose
partners only ever say "no change" still stalls. Filed under the proposal it names, on
``cotn.events.<column>.<proposal>.update``; no projection of its own.
"""

from __future__ import annotations

import builtins
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field as PydanticField
from pydantic import StrictStr

from shared.catalogue import Catalogue
from shared.events import CloudEvent, Frozen, Note, Ref
from shared.kinds.base import future_period_problems
from shared.kinds.milestone import OfAProposal, proposal_problems
from shared.periods import PERIOD_PATTERN, coarser, frequency_of, month_of
from shared.problems import Problem

TYPE = "org.cotn.update.v1"


class UpdateData(Frozen):
    proposal: Ref
    status: Literal["no_change"] = PydanticField(
        description="What the update says: nothing moved since the last one"
    )
    period: Annotated[StrictStr, PydanticField(pattern=PERIOD_PATTERN)] | None = PydanticField(
        default=None,
        description="The reporting period it is for (a month, quarter or year, of the "
        "proposal's update frequency); default: the month of the event's time",
    )
    note: Note | None = None


class UpdateEvent(CloudEvent):
    type: Literal["org.cotn.update.v1"]
    data: UpdateData


class Updates(OfAProposal):
    type: ClassVar[str] = TYPE
    name: ClassVar[str] = "update"
    model: ClassVar[builtins.type[CloudEvent]] = UpdateEvent
    description: ClassVar[str] = "A progress update saying nothing moved, from a partner"
    codes: ClassVar[tuple[str, ...]] = ("unknown_proposal", "bad_subject", "future_period")

    def check(
        self, event: Any, *, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        data = event.data
        proposal, problems = proposal_problems(data.proposal, catalogue, column, authority)
        if proposal is None or data.period is None:
            return problems
        if proposal.updates and coarser(data.period, proposal.updates.frequency):
            problems.append(
                Problem(
                    "data.period",
                    f"{data.period} is a {frequency_of(data.period)} period but proposal "
                    f"{proposal.id} reports {proposal.updates.frequency}",
                )
            )
        problems += future_period_problems(data.period, event.time, "an update")
        return problems

    def row(self, event: Any) -> dict[str, Any]:
        return {"period": event.data.period or month_of(event.time)}


KIND = Updates()
