"""Programme health: pure functions of the catalogue, the stored state and a clock.

Nothing here touches a broker or a database. The aggregator loads a
:class:`ProgrammeState` from its projections and calls :func:`programme_health` with
``now``; the read API, the metrics and the status events all come from its answer, so
they cannot disagree.

The rules (CONTRACT §5):

- A proposal's **last progress** is the time of its newest milestone event (by event
  time); before any event it is the programme's start, so a proposal that never reports
  stalls too.
- A proposal is **stalled** when it has unfinished milestones and its last progress is
  older than its stall threshold.
- A milestone is **overdue** when its due date has passed (the day after it) and it is not
  completed; **overdue beyond grace** once ``overdue_grace`` has also passed.
- **RAG**: red for a blocked milestone, a milestone overdue beyond grace, or a stall;
  amber for a milestone at risk, overdue within grace, a KPI the proposal evidences off
  its trajectory, or progress older than half the stall threshold; green otherwise.
- A KPI's **expected** value at a date lies on the path from baseline to target: a straight
  line (``linear``) or constant growth (``compound``), flat before the baseline date and
  after the target date. Its latest actual (the observation of the latest period) is **off
  trajectory** when it is worse, in the KPI's direction, than the expected value at the end
  of that period by more than the KPI's tolerance (a fraction of the expected value).

Every rating carries the :class:`Reason` list that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Literal, NamedTuple

from shared.catalogue import Catalogue, Kpi, Proposal
from shared.periods import period_end

Rag = Literal["green", "amber", "red"]
RAG_VALUE: dict[str, int] = {"green": 0, "amber": 1, "red": 2}


# The records made once per milestone or reason on every rating are immutable NamedTuples:
# a frozen dataclass costs about four times as much to build, which at 10,000 milestones
# was a third of the rating.


class MilestoneState(NamedTuple):
    """The newest (by event time, then stream sequence) status of one milestone."""

    proposal: str
    milestone: str
    status: str
    event_time: datetime
    source: str
    event_id: str
    note: str | None = None


class KpiObservation(NamedTuple):
    """The newest report of one KPI for one period."""

    kpi: str
    period: str
    value: float
    event_time: datetime
    source: str


@dataclass(frozen=True)
class ProgrammeState:
    """What the projections hold: milestone states and KPI observations."""

    milestones: Mapping[tuple[str, str], MilestoneState] = field(default_factory=dict)
    kpi_observations: Mapping[str, Sequence[KpiObservation]] = field(default_factory=dict)

    @cached_property
    def milestones_by_proposal(self) -> Mapping[str, Mapping[str, MilestoneState]]:
        """Proposal id -> milestone id -> state, grouped once: rating a large programme
        must not scan every state for every proposal."""
        grouped: dict[str, dict[str, MilestoneState]] = {}
        for (pid, mid), s in self.milestones.items():
            grouped.setdefault(pid, {})[mid] = s
        return grouped


class Reason(NamedTuple):
    """One rule that coloured a rating, and what it was about."""

    rule: str
    rag: Rag
    detail: str
    milestone: str | None = None
    kpi: str | None = None
    since: datetime | None = None


class MilestoneHealth(NamedTuple):
    id: str
    title: str
    due: date
    status: str
    overdue: bool
    overdue_beyond_grace: bool
    updated_at: datetime | None
    source: str | None
    note: str | None


@dataclass(frozen=True)
class KpiHealth:
    id: str
    title: str
    unit: str
    direction: str
    baseline: float
    baseline_date: date
    target: float
    target_date: date
    expected_now: float
    actual: float | None
    actual_period: str | None
    expected_at_actual: float | None
    on_track: bool | None
    reported_at: datetime | None


@dataclass(frozen=True)
class ProposalHealth:
    id: str
    column: str
    rag: Rag
    reasons: tuple[Reason, ...]
    stalled: bool
    last_progress: datetime
    has_progress: bool
    stall_threshold: timedelta
    milestones: tuple[MilestoneHealth, ...]

    @property
    def milestone_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.milestones:
            counts[m.status] = counts.get(m.status, 0) + 1
        return counts

    @property
    def overdue(self) -> list[str]:
        return [m.id for m in self.milestones if m.overdue]


@dataclass(frozen=True)
class ProgrammeHealth:
    at: datetime
    proposals: dict[str, ProposalHealth]
    kpis: dict[str, KpiHealth]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


ONE_DAY = timedelta(days=1)


@lru_cache(maxsize=65536)
def _late_from(due: date, grace: timedelta) -> tuple[datetime, datetime]:
    """When a milestone due on ``due`` becomes overdue (the start of the next day, UTC), and
    when overdue beyond ``grace``."""
    late_from = _midnight(due + ONE_DAY)
    return late_from, late_from + grace


def _fraction(start: date, end: date, at: date) -> float:
    span = (end - start).days
    return min(1.0, max(0.0, (at - start).days / span))


def kpi_expected(kpi: Kpi, at: date) -> float:
    """The KPI's value on its trajectory at ``at``."""
    f = _fraction(kpi.baseline.date, kpi.target.date, at)
    b, t = kpi.baseline.value, kpi.target.value
    if kpi.shape == "compound":
        return float(b * (t / b) ** f)
    return b + (t - b) * f


def is_off_trajectory(kpi: Kpi, actual: float, expected: float) -> bool:
    """Worse than expected, in the KPI's direction, by more than its tolerance."""
    scale = abs(expected) or abs(kpi.target.value) or 1.0
    slack = kpi.tolerance * scale
    if kpi.direction == "up":
        return actual < expected - slack
    return actual > expected + slack


def latest_observation(observations: Sequence[KpiObservation]) -> KpiObservation | None:
    """The report of the latest period; within one period end, the newest report."""
    if not observations:
        return None
    return max(observations, key=lambda o: (period_end(o.period), o.event_time))


def kpi_health(kpi: Kpi, observations: Sequence[KpiObservation], now: datetime) -> KpiHealth:
    latest = latest_observation(observations)
    expected_at = on_track = None
    if latest is not None:
        expected_at = kpi_expected(kpi, period_end(latest.period))
        on_track = not is_off_trajectory(kpi, latest.value, expected_at)
    return KpiHealth(
        id=kpi.id,
        title=kpi.title,
        unit=kpi.unit,
        direction=kpi.direction,
        baseline=kpi.baseline.value,
        baseline_date=kpi.baseline.date,
        target=kpi.target.value,
        target_date=kpi.target.date,
        # Dates are read in UTC, like milestone due dates, whatever zone the clock is in.
        expected_now=kpi_expected(kpi, now.astimezone(UTC).date()),
        actual=latest.value if latest else None,
        actual_period=latest.period if latest else None,
        expected_at_actual=expected_at,
        on_track=on_track,
        reported_at=latest.event_time if latest else None,
    )


def milestone_health(
    proposal: Proposal, state: ProgrammeState, now: datetime
) -> tuple[MilestoneHealth, ...]:
    """Each milestone of ``proposal`` in catalogue order, with its status and lateness."""
    states = state.milestones_by_proposal.get(proposal.id, {})
    grace = proposal.overdue_grace
    out = []
    for m in proposal.milestones:
        s = states.get(m.id)
        status = s.status if s else "not_started"
        late_from, beyond_from = _late_from(m.due, grace)
        overdue = status != "completed" and now >= late_from
        out.append(
            MilestoneHealth(
                id=m.id,
                title=m.title,
                due=m.due,
                status=status,
                overdue=overdue,
                overdue_beyond_grace=overdue and now >= beyond_from,
                updated_at=s.event_time if s else None,
                source=s.source if s else None,
                note=s.note if s else None,
            )
        )
    return tuple(out)


def last_progress(
    proposal: Proposal, state: ProgrammeState, programme_start: date
) -> tuple[datetime, bool]:
    """The newest milestone event time of the proposal, or the programme start if none."""
    known = proposal.milestone_by_id
    states = state.milestones_by_proposal.get(proposal.id, {})
    times = [s.event_time for mid, s in states.items() if mid in known]
    if times:
        return max(times), True
    return _midnight(programme_start), False


def _milestone_reasons(milestones: Sequence[MilestoneHealth]) -> list[Reason]:
    """What the milestones' own statuses and due dates say, milestone by milestone."""
    reasons: list[Reason] = []
    for m in milestones:
        if m.status == "blocked":
            reasons.append(
                Reason(
                    "milestone_blocked", "red", f"{m.title} is blocked", m.id, since=m.updated_at
                )
            )
        late = f"{m.title} was due {m.due} and is {m.status}"
        if m.overdue_beyond_grace:
            reasons.append(Reason("milestone_overdue_beyond_grace", "red", late, m.id))
        elif m.overdue:
            reasons.append(Reason("milestone_overdue", "amber", late, m.id))
        if m.status == "at_risk":
            reasons.append(
                Reason(
                    "milestone_at_risk", "amber", f"{m.title} is at risk", m.id, since=m.updated_at
                )
            )
    return reasons


def proposal_health(
    catalogue: Catalogue,
    proposal: Proposal,
    state: ProgrammeState,
    kpis: Mapping[str, KpiHealth],
    now: datetime,
) -> ProposalHealth:
    """Rate one proposal; ``kpis`` are the already-rated KPIs of the programme."""
    milestones = milestone_health(proposal, state, now)
    progress, has_progress = last_progress(proposal, state, catalogue.programme_start)
    unfinished = any(m.status != "completed" for m in milestones)
    quiet_for = now - progress
    stalled = unfinished and quiet_for > proposal.stall_threshold
    reasons = _milestone_reasons(milestones)
    days = quiet_for.total_seconds() / 86400
    if stalled:
        reasons.append(
            Reason(
                "stalled",
                "red",
                f"no milestone event for {days:.1f} days (threshold {proposal.stall_threshold})",
                since=progress,
            )
        )
    elif unfinished and quiet_for > proposal.stall_threshold / 2:
        reasons.append(
            Reason(
                "progress_ageing",
                "amber",
                f"last milestone event {days:.1f} days ago, over half the stall threshold",
                since=progress,
            )
        )
    for k in catalogue.kpis_evidencing.get(proposal.id, ()):
        if kpis[k.id].on_track is False:
            h = kpis[k.id]
            reasons.append(
                Reason(
                    "kpi_off_trajectory",
                    "amber",
                    f"{k.title}: {h.actual:g} in {h.actual_period} against "
                    f"{h.expected_at_actual:g} expected",
                    kpi=k.id,
                )
            )
    rag: Rag = "green"
    if any(r.rag == "red" for r in reasons):
        rag = "red"
    elif reasons:
        rag = "amber"
    return ProposalHealth(
        id=proposal.id,
        column=catalogue.column_of[proposal.id],
        rag=rag,
        reasons=tuple(reasons),
        stalled=stalled,
        last_progress=progress,
        has_progress=has_progress,
        stall_threshold=proposal.stall_threshold,
        milestones=milestones,
    )


def kpis_health(catalogue: Catalogue, state: ProgrammeState, now: datetime) -> dict[str, KpiHealth]:
    """Rate every KPI of the programme at ``now``, by id in catalogue order."""
    return {k.id: kpi_health(k, state.kpi_observations.get(k.id, ()), now) for k in catalogue.kpis}


def programme_health(catalogue: Catalogue, state: ProgrammeState, now: datetime) -> ProgrammeHealth:
    """Rate every KPI and proposal of the programme at ``now``."""
    kpis = kpis_health(catalogue, state, now)
    proposals = {p.id: proposal_health(catalogue, p, state, kpis, now) for p in catalogue.proposals}
    return ProgrammeHealth(at=now, proposals=proposals, kpis=kpis)
