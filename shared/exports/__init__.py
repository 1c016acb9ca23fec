"""Returns upwards: the programme as at an instant, as the exports read it (pure).

The aggregator reads a :class:`Standing` from the store for an instant (the same as-at
state, rating and locks as the board of that instant) and hands it to a builder:
``iati.py`` (IATI 2.03 activities for funders) or ``gmpp.py`` (a GMPP-style quarterly
return for government). Builders are pure functions of a standing: no clock, no store.

Only **approved** KPI values leave the programme: a period's actual is present only when a
reporter's return of it is approved (locked by an office approval as at the instant), and a
milestone's completion counts as actual only when it is completed; whether the office
verified it is said beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from shared.catalogue import Catalogue, MilestoneKey
from shared.health import ProgrammeHealth
from shared.reporting import Status


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """One reporting period of a KPI: its trajectory value at the period's end and, when a
    return of it is approved, the approved value."""

    period: str
    """``2026``, ``2026-Q3`` or ``2026-07``."""
    start: date
    end: date
    target: float
    """The expected value on the KPI's trajectory at ``end`` (``shared.health.kpi_expected``)."""
    actual: float | None
    """The approved value; None when no return of the period is approved."""
    reporter: str | None
    """Whose approved return ``actual`` is."""
    approved_at: datetime | None
    """When the approving review was made (its event time)."""


@dataclass(frozen=True, slots=True)
class Standing:
    """The programme as at ``as_at``: everything an export reports, read once."""

    catalogue: Catalogue
    as_at: datetime
    """The instant the standing is for (aware, UTC)."""
    health: ProgrammeHealth
    """The board as at ``as_at``: the same rating the read API gives for ``?as_at=``."""
    kpi_periods: Mapping[str, tuple[PeriodResult, ...]]
    """Per KPI id, in period order: each period of its return frequency from the one that
    holds the programme's start to the last one ended by ``as_at``, and any other period
    with an approved actual."""
    verified: frozenset[MilestoneKey]
    """Completions the office had verified as at ``as_at``: (proposal, milestone)."""
    returns: tuple[Status, ...]
    """Every return owed up to ``as_at``'s day, judged by what had been received by
    ``as_at`` (``shared.reporting.statuses``)."""

    def completed_on(self, proposal: str, milestone: str) -> date | None:
        """The day a completed milestone was completed (its completion event's time)."""
        for m in self.health.proposals[proposal].milestones:
            if m.id == milestone:
                if m.status == "completed" and m.updated_at is not None:
                    return m.updated_at.date()
                return None
        raise KeyError((proposal, milestone))
