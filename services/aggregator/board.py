"""The programme board: response models and the pure mapping from a health snapshot to them.

:func:`shared.health.programme_health` rates the programme; this module only reshapes its
answer (plus the catalogue's titles, partners and texts) into what the read API returns
and what ``cotn status`` prints. :class:`ReasonOut` is also the reasons' wire model in
status events. Nothing here reads a database or a clock. Notes reported in events are
carried as plain strings and never interpreted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple
from urllib.parse import urlencode

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import to_json

from shared.catalogue import Catalogue, Kpi, Milestone, Proposal
from shared.health import (
    RAG_VALUE,
    HistoryEntry,
    KpiHealth,
    KpiObservation,
    KpiPeriod,
    MilestoneHealth,
    ProgrammeHealth,
    ProposalHealth,
    Rag,
    Reason,
    kpi_trajectory,
    rule_title,
)
from shared.kinds.milestone import MILESTONE_STATUSES, MilestoneStatus
from shared.reviews import Review, kpi_target, milestone_target

Locks = Mapping[str, Review]
"""Each locked return's target and the approval or verification that locks it."""
NO_LOCKS: Locks = {}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class PointOut(_Out):
    value: float
    date: date


class EventRefOut(_Out):
    """An event of the audit trail, by the pair that identifies it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    id: str
    href: str = Field(description="The event in the audit trail (GET /v1/events)")


class ReasonOut(_Out):
    """One rule that coloured a proposal, and what it was about."""

    # Also the reasons of status events (status.py), whose contract is closed.
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str = Field(
        description="milestone_blocked, milestone_overdue_beyond_grace, stalled (red); "
        "milestone_at_risk, milestone_overdue, milestone_dependency_at_risk, "
        "kpi_off_trajectory, progress_ageing (amber)"
    )
    title: str = Field(description="The rule's title for people (Milestone blocked, ...)")
    rag: Rag
    detail: str
    milestone: str | None = Field(description="The milestone the rule is about, if any")
    kpi: str | None = Field(description="The KPI the rule is about, if any")
    since: AwareDatetime | None = Field(description="When the condition started, where known")
    events: list[EventRefOut] = Field(
        default_factory=list, description="The stored events behind the reason"
    )
    chain: list[str] = Field(
        default_factory=list,
        description="milestone_dependency_at_risk: the chain of proposal/milestone, root first, "
        "ending with the milestone at risk",
    )


class FollowOut(_Out):
    milestone: str = Field(description="proposal/milestone it follows")
    lag_seconds: float
    draft: bool = Field(description="A draft dependency, to be confirmed")


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
    event: EventRefOut | None = Field(description="The event of the status shown")
    follows: list[FollowOut] = Field(description="The milestones it follows (catalogue)")
    forecast: date | None = Field(
        description="Forecast finish while unfinished: its due date, pushed by today and by "
        "what it follows; null once completed"
    )
    at_risk_because_of: list[str] = Field(
        description="The upstream chain (proposal/milestone, root first) that puts it at "
        "risk; empty if none"
    )
    verification: Literal["verified", "unverified"] | None = Field(
        description="A completion: verified by the programme office (and locked), or not "
        "yet; null while not completed"
    )


AS_AT_DOC = (
    "The instant asked for with ?as_at= (state from events whose time is not after it); "
    "null for the live board"
)
KNOWN_AT_DOC = (
    "The instant asked for with ?known_at= (only events stored by then: the board as it "
    "was shown); null when not asked"
)
GENERATED_AT_DOC = (
    "The instant rated: as_at if given, else known_at; for the live board, the time it was "
    "last rated, which holds until an event or the clock changes the rating"
)


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
    actual_approved: bool | None = Field(
        description="Whether the programme office approved the actual (its reporter's return "
        "for its period); null until an actual is reported"
    )
    evidences: list[str] = Field(description="Proposals and gamechangers it evidences")


class ProposalDetailOut(ProposalOut):
    """One proposal with its text and the KPIs that evidence it."""

    text: str
    annex_text: str | None
    kpis: list[KpiOut]
    generated_at: datetime = Field(description=GENERATED_AT_DOC)
    as_at: datetime | None = Field(description=AS_AT_DOC)
    known_at: datetime | None = Field(description=KNOWN_AT_DOC)


class ColumnOut(_Out):
    id: str
    title: str
    proposals: list[ProposalOut]


class ProgrammeOut(_Out):
    """The whole board at ``generated_at``."""

    name: str
    status: str
    generated_at: datetime = Field(description=GENERATED_AT_DOC)
    as_at: datetime | None = Field(description=AS_AT_DOC)
    known_at: datetime | None = Field(description=KNOWN_AT_DOC)
    columns: list[ColumnOut]
    kpis: list[KpiOut]


class KpiListOut(_Out):
    generated_at: datetime = Field(description=GENERATED_AT_DOC)
    as_at: datetime | None = Field(description=AS_AT_DOC)
    known_at: datetime | None = Field(description=KNOWN_AT_DOC)
    kpis: list[KpiOut]


class View(NamedTuple):
    """Which board a request asked for: live (both None), as at, known at, or both."""

    as_at: datetime | None = None
    known_at: datetime | None = None


LIVE = View()


# The views are built as plain dicts shaped exactly like the models' JSON (same keys, same
# order, floats as floats). The read API serialises the whole board's dict directly, so a
# board of thousands of milestones costs no model per milestone; the model functions below
# validate the same dicts, so the two cannot drift apart. Each record has one mapping.


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def event_ref(source: str, event_id: str) -> dict[str, Any]:
    """The plain data of :class:`EventRefOut`: the event and its place in the audit trail."""
    return {"source": source, "id": event_id, "href": _audit_href(source, event_id)}


@lru_cache(maxsize=1 << 16)
def _audit_href(source: str, event_id: str) -> str:
    # Kept: a board names the same events at every build, and urlencode is slow (a profile
    # under ingestion found it a fifth of a build's time).
    return "/v1/events?" + urlencode({"source": source, "id": event_id})


def reason_data(reason: Reason) -> dict[str, Any]:
    """The plain data of :class:`ReasonOut` for one domain reason: the one mapping of a
    reason to the wire, for the board and the status events."""
    return {
        "rule": reason.rule,
        "title": rule_title(reason.rule),
        "rag": reason.rag,
        "detail": reason.detail,
        "milestone": reason.milestone,
        "kpi": reason.kpi,
        "since": reason.since,
        "events": [event_ref(e.source, e.id) for e in reason.events],
        "chain": list(reason.chain),
    }


def _follows(proposal: Proposal, milestone: Milestone) -> list[dict[str, Any]]:
    return [
        {
            "milestone": f"{f.proposal or proposal.id}/{f.milestone}",
            "lag_seconds": f.lag.total_seconds(),
            "draft": f.draft,
        }
        for f in milestone.follows
    ]


def _milestone(proposal: Proposal, m: MilestoneHealth, locks: Locks) -> dict[str, Any]:
    risk = m.upstream_risk
    entry = proposal.milestone_by_id.get(m.id)
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
        "event": event_ref(m.source, m.event_id) if m.source and m.event_id else None,
        "follows": _follows(proposal, entry) if entry and entry.follows else [],
        "forecast": m.forecast,
        "at_risk_because_of": [f"{p}/{mid}" for p, mid in risk.chain] if risk else [],
        "verification": _verification(proposal, m, locks),
    }


def _verification(proposal: Proposal, m: MilestoneHealth, locks: Locks) -> str | None:
    if m.status != "completed":
        return None
    return "verified" if milestone_target(proposal.id, m.id) in locks else "unverified"


def approved(locks: Locks, kpi: str, period: str | None, reporter: str | None) -> bool | None:
    """Whether the return of ``reporter``'s actual of ``kpi`` for ``period`` is approved;
    None when there is no actual."""
    if period is None or reporter is None:
        return None
    lock = locks.get(kpi_target(kpi, period, reporter))
    return lock is not None and lock.action == "approve"


def _proposal(
    proposal: Proposal, health: ProposalHealth, locks: Locks, *, milestones: bool = True
) -> dict[str, Any]:
    """The plain data of :class:`ProposalOut`; ``milestones`` (the last key) left out when
    False, for :class:`ProgrammeEncoder` to add as it keeps them."""
    counts = milestone_counts(health)
    data = {
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
    }
    if milestones:
        data["milestones"] = [_milestone(proposal, m, locks) for m in health.milestones]
    return data


def _kpi(kpi: Kpi, health: KpiHealth, locks: Locks) -> dict[str, Any]:
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
        "actual_approved": approved(
            locks, kpi.id, health.actual_period, health.event.source if health.event else None
        ),
        "evidences": kpi.evidences,
    }


def milestone_counts(health: ProposalHealth) -> dict[str, int]:
    """Milestones per status with every status present, so a zero is a zero, not a gap."""
    counts = dict.fromkeys(MILESTONE_STATUSES, 0)
    for m in health.milestones:
        counts[m.status] = counts.get(m.status, 0) + 1
    return counts


def _kpis(catalogue: Catalogue, health: ProgrammeHealth, locks: Locks) -> list[dict[str, Any]]:
    return [_kpi(k, health.kpis[k.id], locks) for k in catalogue.kpis]


def programme_document(
    catalogue: Catalogue, health: ProgrammeHealth, view: View = LIVE, locks: Locks = NO_LOCKS
) -> dict[str, Any]:
    """The whole board as the plain data of :class:`ProgrammeOut` (what the API serialises)."""
    columns = [
        {
            "id": c.id,
            "title": c.title,
            "proposals": [
                _proposal(p, health.proposals[p.id], locks) for p in catalogue.proposals_of(c.id)
            ],
        }
        for c in catalogue.columns
    ]
    return {
        "name": catalogue.programme,
        "status": catalogue.status,
        "generated_at": health.at,
        "as_at": view.as_at,
        "known_at": view.known_at,
        "columns": columns,
        "kpis": _kpis(catalogue, health, locks),
    }


class ProgrammeEncoder:
    """The board's JSON made of encoded parts kept from one board to the next: a proposal's
    part is made again only when its rating record or the verifications it shows changed,
    and then from its milestones' parts, each made again only when its own rating or
    verification changed. A board after a batch that touched a few proposals (re-rated by
    :func:`shared.health.rerate`, which keeps the records of the rest) costs those few; the
    bytes are those of ``to_json(programme_document(...))``. Each proposal's part keeps its
    digest, so the board's entity tag (:meth:`encode_tagged`) hashes those, not the board."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._parts: dict[str, tuple[ProposalHealth, frozenset[str], bytes, bytes]] = {}
        self._milestones: dict[tuple[str, str], tuple[MilestoneHealth, str | None, bytes]] = {}

    def encode(self, health: ProgrammeHealth, view: View = LIVE, locks: Locks = NO_LOCKS) -> bytes:
        """``programme_document(catalogue, health, view, locks)`` as JSON bytes."""
        return self.encode_tagged(health, view, locks)[0]

    def encode_tagged(
        self, health: ProgrammeHealth, view: View = LIVE, locks: Locks = NO_LOCKS
    ) -> tuple[bytes, str]:
        """:meth:`encode`'s bytes and a digest of them (hex): the digest of what joins the
        parts and of each part's digest, so equal boards have equal digests on any replica
        and a board that differs in any byte has another."""
        c = self._catalogue
        head = {
            "name": c.programme,
            "status": c.status,
            "generated_at": health.at,
            "as_at": view.as_at,
            "known_at": view.known_at,
        }
        out = [to_json(head)[:-1], b',"columns":[']
        digest = hashlib.blake2b(digest_size=16)
        for i, column in enumerate(c.columns):
            parts = [
                self._part(p, health.proposals[p.id], locks) for p in c.proposals_of(column.id)
            ]
            joint = [b"," if i else b"", to_json({"id": column.id, "title": column.title})[:-1]]
            out += [*joint, b',"proposals":[', b",".join(part for part, _ in parts), b"]}"]
            digest.update(b"".join(joint))
            digest.update(b"".join(d for _, d in parts))
        tail = [b'],"kpis":', to_json(_kpis(c, health, locks)), b"}"]
        out += tail
        digest.update(out[0])
        digest.update(b"".join(tail))
        return b"".join(out), digest.hexdigest()

    def _part(
        self, proposal: Proposal, record: ProposalHealth, locks: Locks
    ) -> tuple[bytes, bytes]:
        verified = frozenset(
            m.id
            for m in record.milestones
            if m.status == "completed" and milestone_target(proposal.id, m.id) in locks
        )
        kept = self._parts.get(proposal.id)
        if kept is not None and kept[0] is record and kept[1] == verified:
            return kept[2], kept[3]
        # _proposal's plain data, its milestones (the last key) from their kept parts.
        data = _proposal(proposal, record, locks, milestones=False)
        milestones = b",".join(self._milestone(proposal, m, locks) for m in record.milestones)
        part = b"".join((to_json(data)[:-1], b',"milestones":[', milestones, b"]}"))
        digest = hashlib.blake2b(part, digest_size=16).digest()
        self._parts[proposal.id] = (record, verified, part, digest)
        return part, digest

    def _milestone(self, proposal: Proposal, m: MilestoneHealth, locks: Locks) -> bytes:
        verification = _verification(proposal, m, locks)
        key = (proposal.id, m.id)
        kept = self._milestones.get(key)
        if kept is not None and kept[1] == verification and kept[0] == m:
            return kept[2]
        part = to_json(_milestone(proposal, m, locks))
        self._milestones[key] = (m, verification, part)
        return part


def programme_view(
    catalogue: Catalogue, health: ProgrammeHealth, view: View = LIVE, locks: Locks = NO_LOCKS
) -> ProgrammeOut:
    """The whole board: columns in catalogue order, each with its proposals, then the KPIs."""
    return ProgrammeOut.model_validate(programme_document(catalogue, health, view, locks))


def proposal_detail(
    catalogue: Catalogue,
    health: ProgrammeHealth,
    proposal_id: str,
    view: View = LIVE,
    locks: Locks = NO_LOCKS,
) -> ProposalDetailOut | None:
    """One proposal with its text and evidencing KPIs; None if the catalogue has no such id."""
    proposal = catalogue.proposal_by_id.get(proposal_id)
    if proposal is None:
        return None
    kpis = [
        _kpi(k, health.kpis[k.id], locks) for k in catalogue.kpis_evidencing.get(proposal.id, ())
    ]
    return ProposalDetailOut.model_validate(
        {
            **_proposal(proposal, health.proposals[proposal.id], locks),
            "text": proposal.text,
            "annex_text": proposal.annex_text,
            "kpis": kpis,
            "generated_at": health.at,
            "as_at": view.as_at,
            "known_at": view.known_at,
        }
    )


def kpi_list(
    catalogue: Catalogue, health: ProgrammeHealth, view: View = LIVE, locks: Locks = NO_LOCKS
) -> KpiListOut:
    """Every KPI in catalogue order, at the snapshot's time."""
    return KpiListOut.model_validate(
        {
            "generated_at": health.at,
            "as_at": view.as_at,
            "known_at": view.known_at,
            "kpis": _kpis(catalogue, health, locks),
        }
    )


def rag_value(rag: str) -> int:
    """0 green, 1 amber, 2 red: the number dashboards and alerts compare."""
    return RAG_VALUE[rag]


# Time: a proposal's history, the changes between two instants, a KPI's every period.


class HistoryEntryOut(_Out):
    """A change of the proposal's RAG, stalled or overdue state."""

    at: datetime = Field(description="When the change took effect")
    cause: Literal["event", "clock"] = Field(
        description="event: events of that instant; clock: time alone (a stall threshold "
        "crossed, a due date passed, a forecast pushed)"
    )
    events: list[EventRefOut] = Field(description="The events of that instant, if any")
    changed: list[Literal["rag", "stalled", "overdue"]] = Field(
        description="What changed; empty for the first entry"
    )
    rag: Rag
    stalled: bool
    overdue: list[str]
    reasons: list[ReasonOut]


class ProposalHistoryOut(_Out):
    proposal: str
    column: str
    generated_at: datetime = Field(description="The history runs to this instant")
    known_at: datetime | None = Field(description=KNOWN_AT_DOC)
    entries: list[HistoryEntryOut] = Field(description="Oldest first")


class RatingOut(_Out):
    rag: Rag
    stalled: bool
    overdue: list[str]
    reasons: list[ReasonOut]


class ProposalChangeOut(_Out):
    id: str
    column: str
    before: RatingOut
    after: RatingOut


class KpiRatingOut(_Out):
    actual: float | None
    actual_period: str | None
    expected_at_actual: float | None
    on_track: bool | None


class KpiChangeOut(_Out):
    id: str
    before: KpiRatingOut
    after: KpiRatingOut


class ChangesOut(_Out):
    """What changed rating between two instants, each rated as known now (as_at)."""

    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    proposals: list[ProposalChangeOut] = Field(description="Whose (rag, stalled) changed")
    kpis: list[KpiChangeOut] = Field(description="Whose on-track state changed")


class ReportOut(_Out):
    value: float
    reported_at: datetime = Field(description="The report's event time")
    source: str = Field(description="The reporter")
    event: EventRefOut


class KpiPeriodOut(_Out):
    period: str
    period_end: date
    actual: float = Field(description="The newest report of the period")
    source: str = Field(description="Who reported the actual")
    reported_at: datetime
    event: EventRefOut
    expected: float = Field(description="Trajectory value at the period's end")
    on_track: bool
    approved: bool = Field(
        description="Whether the programme office approved the actual's return (its "
        "reporter's, for the period)"
    )
    reports: list[ReportOut] = Field(description="Every report, first then each correction")


class KpiSeriesOut(KpiOut):
    """One KPI with every reported period and its trajectory as a series to draw."""

    generated_at: datetime = Field(description=GENERATED_AT_DOC)
    as_at: datetime | None = Field(description=AS_AT_DOC)
    known_at: datetime | None = Field(description=KNOWN_AT_DOC)
    periods: list[KpiPeriodOut] = Field(description="In period order")
    trajectory: list[PointOut] = Field(
        description="The expected path: baseline, each year's end, target"
    )


def _rating(health: ProposalHealth) -> dict[str, Any]:
    return {
        "rag": health.rag,
        "stalled": health.stalled,
        "overdue": health.overdue,
        "reasons": [reason_data(r) for r in health.reasons],
    }


def history_view(
    proposal: Proposal,
    column: str,
    entries: list[HistoryEntry],
    until: datetime,
    known_at: datetime | None,
) -> ProposalHistoryOut:
    """A proposal's history as the read API returns it."""
    return ProposalHistoryOut.model_validate(
        {
            "proposal": proposal.id,
            "column": column,
            "generated_at": until,
            "known_at": known_at,
            "entries": [
                {
                    "at": e.at,
                    "cause": e.cause,
                    "events": [event_ref(r.source, r.id) for r in e.events],
                    "changed": list(e.changed),
                    **_rating(e.health),
                }
                for e in entries
            ],
        }
    )


def _kpi_rating(health: KpiHealth) -> dict[str, Any]:
    return {
        "actual": _float(health.actual),
        "actual_period": health.actual_period,
        "expected_at_actual": _float(health.expected_at_actual),
        "on_track": health.on_track,
    }


def changes_view(
    start: datetime,
    end: datetime,
    proposals: list[tuple[ProposalHealth, ProposalHealth]],
    kpis: list[tuple[KpiHealth, KpiHealth]],
) -> ChangesOut:
    """The changes between two ratings as the read API returns them."""
    return ChangesOut.model_validate(
        {
            "from": start,
            "to": end,
            "proposals": [
                {"id": b.id, "column": b.column, "before": _rating(b), "after": _rating(a)}
                for b, a in proposals
            ],
            "kpis": [
                {"id": b.id, "before": _kpi_rating(b), "after": _kpi_rating(a)} for b, a in kpis
            ],
        }
    )


def _report(o: KpiObservation) -> dict[str, Any]:
    return {
        "value": float(o.value),
        "reported_at": o.event_time,
        "source": o.source,
        "event": event_ref(o.source, o.event_id or ""),
    }


def kpi_series(
    catalogue: Catalogue,
    health: ProgrammeHealth,
    kpi: Kpi,
    periods: list[KpiPeriod],
    view: View = LIVE,
    locks: Locks = NO_LOCKS,
) -> KpiSeriesOut:
    """One KPI with every period and its trajectory, as the read API returns it."""
    return KpiSeriesOut.model_validate(
        {
            **_kpi(kpi, health.kpis[kpi.id], locks),
            "generated_at": health.at,
            "as_at": view.as_at,
            "known_at": view.known_at,
            "periods": [
                {
                    "period": p.period,
                    "period_end": p.period_end,
                    "actual": float(p.actual.value),
                    "source": p.actual.source,
                    "reported_at": p.actual.event_time,
                    "event": event_ref(p.actual.source, p.actual.event_id or ""),
                    "expected": float(p.expected),
                    "on_track": p.on_track,
                    "approved": bool(approved(locks, kpi.id, p.period, p.actual.source)),
                    "reports": [_report(o) for o in p.reports],
                }
                for p in periods
            ],
            "trajectory": [{"date": d, "value": float(v)} for d, v in kpi_trajectory(kpi)],
        }
    )
