"""``org.cotn.review.v1``: the programme office approves, verifies, returns or reopens a return.

A return is one reporter's KPI actual for one period, or a milestone's completion (see
:mod:`shared.reviews`). Reviews come from office identities only (``source``
``office/<name>``), enter through the aggregator's review API, which checks the office token
and that the return exists, and are filed like the event they review: a KPI return's under
the first proposal of its column that the KPI evidences, a completion's under its proposal,
on ``cotn.events.<column>.<proposal>.review``. They fold into no projection: the review
state of a return is read from its reviews in stream order.
"""

from __future__ import annotations

import builtins
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field as PydanticField
from pydantic import StrictStr, model_validator

from shared.catalogue import Catalogue
from shared.events import CloudEvent, Frozen, Note, Ref
from shared.kinds.base import EventKind
from shared.kinds.milestone import proposal_problems
from shared.periods import PERIOD_PATTERN, frequency_of
from shared.problems import Problem
from shared.reviews import Action, is_office, kpi_target, milestone_target

TYPE = "org.cotn.review.v1"

KPI_ACTIONS = ("approve", "return", "reopen")
MILESTONE_ACTIONS = ("verify", "return", "reopen")


class Reviewed(Frozen):
    """The event whose content the review was of (the return as the office saw it)."""

    source: Annotated[StrictStr, PydanticField(min_length=1, max_length=64)]
    id: Annotated[StrictStr, PydanticField(min_length=1, max_length=256)]


class ReviewData(Frozen):
    action: Action
    kpi: Ref | None = PydanticField(default=None, description="A KPI return: the KPI")
    period: Annotated[StrictStr, PydanticField(pattern=PERIOD_PATTERN)] | None = None
    reporter: Ref | None = PydanticField(default=None, description="A KPI return: its reporter")
    proposal: Ref | None = PydanticField(default=None, description="A completion: the proposal")
    milestone: Ref | None = PydanticField(default=None, description="A completion: the milestone")
    reason: Note | None = PydanticField(
        default=None, description="Why: required to return or reopen; the authority sees it"
    )
    reviewed: Reviewed | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        kpi = (self.kpi, self.period, self.reporter)
        completion = (self.proposal, self.milestone)
        if all(kpi) and not any(completion):
            if self.action not in KPI_ACTIONS:
                raise ValueError(
                    f"a KPI return is approved, returned or reopened, not {self.action}"
                )
        elif all(completion) and not any(kpi):
            if self.action not in MILESTONE_ACTIONS:
                raise ValueError(
                    f"a completion is verified, returned or reopened, not {self.action}"
                )
        else:
            raise ValueError(
                "names one return: kpi, period and reporter (a KPI return) or proposal and "
                "milestone (a completion)"
            )
        if self.action in ("return", "reopen") and not (self.reason and self.reason.strip()):
            raise ValueError(f"a reason is required to {self.action}")
        return self

    @property
    def target(self) -> str:
        if self.kpi and self.period and self.reporter:
            return kpi_target(self.kpi, self.period, self.reporter)
        assert self.proposal and self.milestone
        return milestone_target(self.proposal, self.milestone)


class ReviewEvent(CloudEvent):
    type: Literal["org.cotn.review.v1"]
    data: ReviewData


class Reviews(EventKind):
    type: ClassVar[str] = TYPE
    name: ClassVar[str] = "review"
    model: ClassVar[builtins.type[CloudEvent]] = ReviewEvent
    description: ClassVar[str] = "The programme office's review of a KPI return or a completion"
    codes: ClassVar[tuple[str, ...]] = (
        "unknown_kpi", "unknown_proposal", "unknown_milestone", "bad_subject", "wrong_period",
        "not_office",
    )  # fmt: skip

    def check(
        self, event: Any, *, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        data = event.data
        problems = []
        if not is_office(event.source):
            problems.append(
                Problem(
                    "source",
                    "reviews come from programme-office identities (office/<name>), "
                    f"not {event.source!r}",
                    403,
                    code="not_office",
                )
            )
        if data.kpi is not None:
            return problems + self._kpi_problems(data, catalogue, column, authority)
        proposal, found = proposal_problems(data.proposal, catalogue, column, None)
        if proposal is not None and proposal.milestone(data.milestone) is None:
            found.append(
                Problem(
                    "data.milestone",
                    f"unknown milestone {data.milestone!r} of {proposal.id}",
                    code="unknown_milestone",
                )
            )
        return problems + found

    @staticmethod
    def _kpi_problems(
        data: ReviewData, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        kpi = catalogue.kpi_by_id.get(str(data.kpi))
        if kpi is None:
            return [Problem("data.kpi", f"unknown KPI {data.kpi!r}", code="unknown_kpi")]
        problems = []
        if not any(catalogue.column_of[p] == column for p in kpi.evidences):
            problems.append(
                Problem(
                    "data.kpi", f"KPI {kpi.id!r} is not of the {column} column", code="bad_subject"
                )
            )
        if data.reporter not in kpi.reporters:
            problems.append(
                Problem(
                    "data.reporter",
                    f"{data.reporter!r} is not a reporter of KPI {kpi.id} "
                    f"(reporters: {', '.join(kpi.reporters)})",
                    code="unknown_kpi",
                )
            )
        period = str(data.period)
        # At the door only, as for a KPI event (see shared.kinds.kpi).
        if authority is not None and kpi.returns and frequency_of(period) != kpi.returns.frequency:
            problems.append(
                Problem(
                    "data.period",
                    f"{period} is a {frequency_of(period)} period but KPI {kpi.id} is reported "
                    f"{kpi.returns.frequency}",
                    code="wrong_period",
                )
            )
        return problems

    def proposal(self, event: Any, *, catalogue: Catalogue, column: str) -> str:
        data = event.data
        if data.kpi is None:
            return str(data.proposal)
        kpi = catalogue.kpi_by_id[data.kpi]
        return next(p for p in kpi.evidences if catalogue.column_of.get(p) == column)

    def files_under(self, event: Any, proposal: str, catalogue: Catalogue) -> bool:
        data = event.data
        if data.kpi is None:
            return bool(data.proposal == proposal)
        return proposal in catalogue.kpi_by_id[data.kpi].evidences

    def row(self, event: Any) -> dict[str, Any]:
        data = event.data
        return {
            "kpi": data.kpi,
            "milestone": data.milestone,
            "period": data.period,
            "target": data.target,
        }


def column_of_target(catalogue: Catalogue, data: ReviewData) -> tuple[str, str]:
    """The (column, proposal) a review of ``data``'s return is filed under."""
    if data.kpi is None:
        assert data.proposal is not None
        return catalogue.column_of[data.proposal], data.proposal
    return catalogue.home_of_kpi(data.kpi)


KIND = Reviews()
