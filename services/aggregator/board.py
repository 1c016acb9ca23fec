"""The programme board: response models and the pure mapping from a health snapshot to them.

:func:`shared.health.programme_health` rates the programme; this module only reshapes its
answer (plus the catalogue's titles, partners and texts) into what the read API returns
and what ``cotn status`` prints. :class:`ReasonOut` is also the reasons' wire model in
status events. Nothing here reads a database or a clock. Notes reported in events are
carried as plain strings and never interpreted.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.catalogue import Catalogue, Kpi, Proposal
from shared.health import (
    RAG_VALUE,
    KpiHealth,
    MilestoneHealth,
    ProgrammeHealth,
    ProposalHealth,
    Rag,
    Reason,
)
from shared.kinds.milestone import MILESTONE_STATUSES, MilestoneStatus


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class PointOut(_Out):
    value: float
    date: date


class ReasonOut(_Out):
    """One rule that coloured a proposal, and what it was about."""

    # Also the reasons of status events (status.py), whose contract is closed.
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str = Field(
        description="milestone_blocked, milestone_overdue_beyond_grace, stalled (red); "
        "milestone_at_risk, milestone_overdue, kpi_off_trajectory, progress_ageing (amber)"
    )
    rag: Rag
    detail: str
    milestone: str | None = Field(description="The milestone the rule is about, if any")
    kpi: str | None = Field(description="The KPI the rule is about, if any")
    since: AwareDatetime | None = Field(description="When the condition started, where known")


class MilestoneOut(_Out):
    id: str
    title: str
    due: date
    status: MilestoneStatus = Field(description="not_started until a partner reports")
    overdue: bool = Field(description="The due date has passed and it is not completed")
    overdue_beyond_grace: bool
    updated_at: datetime | None = Field(description="Event time of the status shown")
    source: str | None = Field(description="Authority that reported the status shown")
    note: str | None = Field(description="The reporter's note, as sent (plain text)")


class ProposalOut(_Out):
    """A proposal (or gamechanger) on the board."""

    id: str
    kind: Literal["proposal", "gamechanger"]
    title: str
    column: str
    priority: int | None
    partners: list[str] = Field(description="Authorities and bodies that may report on it")
    rag: Rag
    reasons: list[ReasonOut] = Field(description="Every rule that coloured it; empty if green")
    stalled: bool
    last_progress: datetime = Field(
        description="Newest milestone event time, or the programme start before any event"
    )
    has_progress: bool = Field(description="False while no milestone event has been stored")
    stall_threshold_seconds: float
    dates_are_draft: bool
    milestone_counts: dict[MilestoneStatus, int] = Field(
        description="Milestones in each status, every status present"
    )
    unfinished_milestones: int
    overdue: list[str] = Field(description="Ids of overdue milestones, in catalogue order")
    milestones: list[MilestoneOut]


class KpiOut(_Out):
    id: str
    title: str
    unit: str
    direction: Literal["up", "down"] = Field(description="Which way is good")
    shape: Literal["linear", "compound"]
    tolerance: float = Field(description="Relative slack before the KPI is off trajectory")
    baseline: PointOut
    target: PointOut
    target_is_draft: bool
    actual: float | None = Field(description="Value of the latest reported period")
    actual_period: str | None
    reported_at: datetime | None = Field(description="Event time of the actual")
    expected: float = Field(description="Trajectory value now")
    expected_at_actual: float | None = Field(
        description="Trajectory value at the actual's period end"
    )
    on_track: bool | None = Field(description="None until an actual is reported")
    evidences: list[str] = Field(description="Proposals and gamechangers it evidences")


class ProposalDetailOut(ProposalOut):
    """One proposal with its text and the KPIs that evidence it."""

    text: str
    annex_text: str | None
    kpis: list[KpiOut]


class ColumnOut(_Out):
    id: str
    title: str
    proposals: list[ProposalOut]


class ProgrammeOut(_Out):
    """The whole board at ``generated_at``."""

    name: str
    status: str
    generated_at: datetime
    columns: list[ColumnOut]
    kpis: list[KpiOut]


class KpiListOut(_Out):
    generated_at: datetime
    kpis: list[KpiOut]


# The views are built as plain dicts shaped exactly like the models' JSON (same keys, same
# order, floats as floats). The read API serialises the whole board's dict directly, so a
# board of thousands of milestones costs no model per milestone; the model functions below
# validate the same dicts, so the two cannot drift apart. Each record has one mapping.


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def reason_data(reason: Reason) -> dict[str, Any]:
    """The plain data of :class:`ReasonOut` for one domain reason: the one mapping of a
    reason to the wire, for the board and the status events."""
    return {
        "rule": reason.rule,
        "rag": reason.rag,
        "detail": reason.detail,
        "milestone": reason.milestone,
        "kpi": reason.kpi,
        "since": reason.since,
    }


def _milestone(m: MilestoneHealth) -> dict[str, Any]:
    return {
        "id": m.id,
        "title": m.title,
        "due": m.due,
        "status": m.status,
        "overdue": m.overdue,
        "overdue_beyond_grace": m.overdue_beyond_grace,
        "updated_at": m.updated_at,
        "source": m.source,
        "note": m.note,
    }


def _proposal(proposal: Proposal, health: ProposalHealth) -> dict[str, Any]:
    counts = milestone_counts(health)
    return {
        "id": proposal.id,
        "kind": proposal.kind,
        "title": proposal.title,
        "column": health.column,
        "priority": proposal.priority,
        "partners": proposal.partners,
        "rag": health.rag,
        "reasons": [reason_data(r) for r in health.reasons],
        "stalled": health.stalled,
        "last_progress": health.last_progress,
        "has_progress": health.has_progress,
        "stall_threshold_seconds": health.stall_threshold.total_seconds(),
        "dates_are_draft": proposal.dates_are_draft,
        "milestone_counts": counts,
        "unfinished_milestones": len(health.milestones) - counts["completed"],
        "overdue": health.overdue,
        "milestones": [_milestone(m) for m in health.milestones],
    }


def _kpi(kpi: Kpi, health: KpiHealth) -> dict[str, Any]:
    return {
        "id": kpi.id,
        "title": kpi.title,
        "unit": kpi.unit,
        "direction": kpi.direction,
        "shape": kpi.shape,
        "tolerance": float(kpi.tolerance),
        "baseline": {"value": float(health.baseline), "date": health.baseline_date},
        "target": {"value": float(health.target), "date": health.target_date},
        "target_is_draft": kpi.target_is_draft,
        "actual": _float(health.actual),
        "actual_period": health.actual_period,
        "reported_at": health.reported_at,
        "expected": float(health.expected_now),
        "expected_at_actual": _float(health.expected_at_actual),
        "on_track": health.on_track,
        "evidences": kpi.evidences,
    }


def milestone_counts(health: ProposalHealth) -> dict[str, int]:
    """Milestones per status with every status present, so a zero is a zero, not a gap."""
    counts = dict.fromkeys(MILESTONE_STATUSES, 0)
    for m in health.milestones:
        counts[m.status] = counts.get(m.status, 0) + 1
    return counts


def _kpis(catalogue: Catalogue, health: ProgrammeHealth) -> list[dict[str, Any]]:
    return [_kpi(k, health.kpis[k.id]) for k in catalogue.kpis]


def programme_document(catalogue: Catalogue, health: ProgrammeHealth) -> dict[str, Any]:
    """The whole board as the plain data of :class:`ProgrammeOut` (what the API serialises)."""
    columns = [
        {
            "id": c.id,
            "title": c.title,
            "proposals": [
                _proposal(p, health.proposals[p.id]) for p in catalogue.proposals_of(c.id)
            ],
        }
        for c in catalogue.columns
    ]
    return {
        "name": catalogue.programme,
        "status": catalogue.status,
        "generated_at": health.at,
        "columns": columns,
        "kpis": _kpis(catalogue, health),
    }


def programme_view(catalogue: Catalogue, health: ProgrammeHealth) -> ProgrammeOut:
    """The whole board: columns in catalogue order, each with its proposals, then the KPIs."""
    return ProgrammeOut.model_validate(programme_document(catalogue, health))


def proposal_detail(
    catalogue: Catalogue, health: ProgrammeHealth, proposal_id: str
) -> ProposalDetailOut | None:
    """One proposal with its text and evidencing KPIs; None if the catalogue has no such id."""
    proposal = catalogue.proposal_by_id.get(proposal_id)
    if proposal is None:
        return None
    kpis = [_kpi(k, health.kpis[k.id]) for k in catalogue.kpis_evidencing.get(proposal.id, ())]
    return ProposalDetailOut.model_validate(
        {
            **_proposal(proposal, health.proposals[proposal.id]),
            "text": proposal.text,
            "annex_text": proposal.annex_text,
            "kpis": kpis,
        }
    )


def kpi_list(catalogue: Catalogue, health: ProgrammeHealth) -> KpiListOut:
    """Every KPI in catalogue order, at the snapshot's time."""
    return KpiListOut.model_validate({"generated_at": health.at, "kpis": _kpis(catalogue, health)})


def rag_value(rag: str) -> int:
    """0 green, 1 amber, 2 red: the number dashboards and alerts compare."""
    return RAG_VALUE[rag]
