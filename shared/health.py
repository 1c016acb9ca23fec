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
- **Dependencies**: a milestone may follow others (of any proposal) with a lag. Each
  unfinished milestone's **forecast** finish is the latest of its due date, today (it cannot
  finish in the past) and, for each milestone it follows, that one's forecast (or, once
  completed, its completion date) plus the lag. A milestone is **at risk because of** an
  upstream milestone when the forecast that one gives passes its own due date, or at once
  when one upstream of it (transitively) is blocked: amber, naming the whole chain.
- A KPI's **expected** value at a date lies on the path from baseline to target: a straight
  line (``linear``) or constant growth (``compound``), flat before the baseline date and
  after the target date. Its latest actual (the observation of the latest period) is **off
  trajectory** when it is worse, in the KPI's direction, than the expected value at the end
  of that period by more than the KPI's tolerance (a fraction of the expected value).

Every rating carries the :class:`Reason` list that produced it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Literal, NamedTuple

from shared.catalogue import Catalogue, Kpi, MilestoneKey, Proposal
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
    event_id: str | None = None


class EventRef(NamedTuple):
    """An event of the audit trail: (source, id) identifies it."""

    source: str
    id: str


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
    """One rule that coloured a rating, what it was about, since when and the events behind
    it; ``chain`` is a dependency's path, root first, as ``proposal/milestone``."""

    rule: str
    rag: Rag
    detail: str
    milestone: str | None = None
    kpi: str | None = None
    since: datetime | None = None
    events: tuple[EventRef, ...] = ()
    chain: tuple[str, ...] = ()


RULE_TITLES: dict[str, str] = {
    # red
    "milestone_blocked": "Milestone blocked",
    "milestone_overdue_beyond_grace": "Milestone overdue beyond grace",
    "stalled": "Stalled",
    # amber
    "milestone_at_risk": "Milestone at risk",
    "milestone_overdue": "Milestone overdue",
    "milestone_dependency_at_risk": "Milestone at risk through a dependency",
    "kpi_off_trajectory": "KPI off trajectory",
    "progress_ageing": "Progress ageing",
}
"""Every rule a :class:`Reason` names, with its title for people (the board's wire reason
carries it, so no client keeps its own list)."""


def rule_title(rule: str) -> str:
    """The rule's title for people; the rule's own name for one this list does not know."""
    return RULE_TITLES.get(rule, rule)


class DependencyRisk(NamedTuple):
    """Why a milestone is at risk because of what it follows: the chain from the root cause
    (first) to the milestone it follows directly (last), and what the root did."""

    chain: tuple[MilestoneKey, ...]
    cause: Literal["blocked", "late"]
    forecast: date
    """The forecast finish the chain gives the dependant."""
    since: datetime | None
    events: tuple[EventRef, ...]


@dataclass(frozen=True)
class Dependencies:
    """Forecasts and risks of the milestones in the catalogue's dependency graph."""

    forecasts: Mapping[MilestoneKey, date] = field(default_factory=dict)
    risks: Mapping[MilestoneKey, DependencyRisk] = field(default_factory=dict)


NO_DEPENDENCIES = Dependencies()


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
    event_id: str | None = None
    forecast: date | None = None
    """Forecast finish while unfinished (see the module's rules); None once completed."""
    upstream_risk: DependencyRisk | None = None


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
    event: EventRef | None = None
    """The event of the actual shown."""


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
        event=EventRef(latest.source, latest.event_id) if latest and latest.event_id else None,
    )


def _today(now: datetime) -> date:
    return now.astimezone(UTC).date()


def dependencies(
    catalogue: Catalogue,
    state: ProgrammeState,
    now: datetime,
    only: Iterable[MilestoneKey] | None = None,
) -> Dependencies:
    """Forecast finish and upstream risk of every milestone in the dependency graph (with
    ``only``, of those milestones and what they follow: the same values, for fewer).

    Only milestones that follow or are followed are visited, each once: a catalogue without
    dependencies costs nothing. The catalogue check refuses cycles, so the walk ends.
    """
    predecessors = catalogue.predecessors
    if not predecessors:
        return NO_DEPENDENCIES
    today = _today(now)
    forecasts: dict[MilestoneKey, date] = {}
    risks: dict[MilestoneKey, DependencyRisk | None] = {}
    milestones = state.milestones

    def due(key: MilestoneKey) -> date:
        return catalogue.proposal_by_id[key[0]].milestone_by_id[key[1]].due

    def forecast(key: MilestoneKey) -> date:
        known = forecasts.get(key)
        if known is not None:
            return known
        s = milestones.get(key)
        if s is not None and s.status == "completed":
            value = _today(s.event_time)
        else:
            value = max(due(key), today)
            for pred, lag in predecessors.get(key, ()):
                value = max(value, forecast(pred) + lag)
        forecasts[key] = value
        return value

    def risk(key: MilestoneKey) -> DependencyRisk | None:
        if key in risks:
            return risks[key]
        found: DependencyRisk | None = None
        s = milestones.get(key)
        if s is None or s.status != "completed":
            own_due = due(key)
            for pred, lag in predecessors.get(key, ()):
                ps = milestones.get(pred)
                ref = (EventRef(ps.source, ps.event_id),) if ps else ()
                pushed = forecast(pred) + lag
                if ps is not None and ps.status == "completed":
                    if pushed > own_due:
                        found = DependencyRisk((pred,), "late", pushed, ps.event_time, ref)
                elif ps is not None and ps.status == "blocked":
                    found = DependencyRisk((pred,), "blocked", pushed, ps.event_time, ref)
                else:
                    upstream = risk(pred)
                    if upstream is not None and (upstream.cause == "blocked" or pushed > own_due):
                        found = upstream._replace(chain=(*upstream.chain, pred), forecast=pushed)
                    elif pushed > own_due:
                        # Pushed by the clock (it is still unfinished past its due date): at
                        # risk from the first day on which today plus the lag passes own_due.
                        clocked = forecast(pred) == today > due(pred)
                        since = _midnight(own_due - lag + ONE_DAY) if clocked else None
                        found = DependencyRisk((pred,), "late", pushed, since, ref)
                if found is not None:
                    break
        risks[key] = found
        return found

    for key in predecessors if only is None else [k for k in only if k in predecessors]:
        forecast(key)
        risk(key)
    return Dependencies(
        forecasts=forecasts, risks={k: r for k, r in risks.items() if r is not None}
    )


def milestone_health(
    proposal: Proposal,
    state: ProgrammeState,
    now: datetime,
    deps: Dependencies = NO_DEPENDENCIES,
) -> tuple[MilestoneHealth, ...]:
    """Each milestone of ``proposal`` in catalogue order, with its status, lateness, forecast
    finish and upstream risk."""
    states = state.milestones_by_proposal.get(proposal.id, {})
    grace = proposal.overdue_grace
    today = _today(now)
    out = []
    for m in proposal.milestones:
        s = states.get(m.id)
        status = s.status if s else "not_started"
        late_from, beyond_from = _late_from(m.due, grace)
        overdue = status != "completed" and now >= late_from
        key = (proposal.id, m.id)
        forecast = None
        if status != "completed":
            forecast = deps.forecasts.get(key) or max(m.due, today)
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
                event_id=s.event_id if s else None,
                forecast=forecast,
                upstream_risk=deps.risks.get(key),
            )
        )
    return tuple(out)


def newest_progress(proposal: Proposal, state: ProgrammeState) -> MilestoneState | None:
    """The proposal's newest milestone state (by event time), None before any."""
    states = state.milestones_by_proposal.get(proposal.id, {})
    newest: MilestoneState | None = None
    # In catalogue order, so that of two at one instant the first is the newest whatever
    # order the states were loaded in (two replicas, or a state kept up to date, agree).
    for m in proposal.milestones:
        s = states.get(m.id)
        if s is not None and (newest is None or s.event_time > newest.event_time):
            newest = s
    return newest


def last_progress(
    proposal: Proposal, state: ProgrammeState, programme_start: date
) -> tuple[datetime, bool]:
    """The newest milestone event time of the proposal, or the programme start if none."""
    newest = newest_progress(proposal, state)
    if newest is not None:
        return newest.event_time, True
    return _midnight(programme_start), False


def _days(span: timedelta) -> str:
    """A span in whole days, as people say it ("1 day", "45 days"); shorter ones in hours."""
    if span >= ONE_DAY or span == timedelta(0):
        n = span.days
        return f"{n} day" if n == 1 else f"{n} days"
    hours = int(span.total_seconds() // 3600)
    return f"{hours} hour" if hours == 1 else f"{hours} hours"


def _chain_text(chain: Sequence[MilestoneKey]) -> str:
    return " -> ".join(f"{p}/{m}" for p, m in chain)


def _milestone_reasons(milestones: Sequence[MilestoneHealth], proposal: Proposal) -> list[Reason]:
    """What the milestones' own statuses, due dates and upstream say, milestone by milestone."""
    reasons: list[Reason] = []
    grace = proposal.overdue_grace
    for m in milestones:
        refs = (EventRef(m.source, m.event_id),) if m.source and m.event_id else ()
        if m.status == "blocked":
            reasons.append(
                Reason(
                    "milestone_blocked",
                    "red",
                    f"{m.title} is blocked",
                    m.id,
                    since=m.updated_at,
                    events=refs,
                )
            )
        if m.overdue:  # and so, perhaps, beyond its grace
            late = f"{m.title} was due {m.due} and is {m.status.replace('_', ' ')}"
            late_from, beyond_from = _late_from(m.due, grace)
            reasons.append(
                Reason(
                    "milestone_overdue_beyond_grace",
                    "red",
                    f"{late}, more than {_days(grace)} late",
                    m.id,
                    since=beyond_from,
                    events=refs,
                )
                if m.overdue_beyond_grace
                else Reason("milestone_overdue", "amber", late, m.id, since=late_from, events=refs)
            )
        if m.status == "at_risk":
            reasons.append(
                Reason(
                    "milestone_at_risk",
                    "amber",
                    f"{m.title} is at risk",
                    m.id,
                    since=m.updated_at,
                    events=refs,
                )
            )
        r = m.upstream_risk
        if r is not None:
            chain = (*r.chain, (proposal.id, m.id))
            root = f"{r.chain[0][0]}/{r.chain[0][1]}"
            what = "is blocked" if r.cause == "blocked" else "is late"
            reasons.append(
                Reason(
                    "milestone_dependency_at_risk",
                    "amber",
                    f"{m.title} is at risk because of {root}, which {what}: forecast "
                    f"{r.forecast} against due {m.due} (chain {_chain_text(chain)})"
                    if r.cause == "late"
                    else f"{m.title} is at risk because of {root}, which {what} "
                    f"(chain {_chain_text(chain)})",
                    m.id,
                    since=r.since,
                    events=r.events,
                    chain=tuple(f"{p}/{mid}" for p, mid in chain),
                )
            )
    return reasons


def proposal_health(
    catalogue: Catalogue,
    proposal: Proposal,
    state: ProgrammeState,
    kpis: Mapping[str, KpiHealth],
    now: datetime,
    deps: Dependencies = NO_DEPENDENCIES,
) -> ProposalHealth:
    """Rate one proposal; ``kpis`` are the already-rated KPIs of the programme and ``deps``
    the programme's :func:`dependencies` at ``now``."""
    milestones = milestone_health(proposal, state, now, deps)
    newest = newest_progress(proposal, state)
    progress, has_progress = last_progress(proposal, state, catalogue.programme_start)
    progress_refs = (EventRef(newest.source, newest.event_id),) if newest else ()
    unfinished = any(m.status != "completed" for m in milestones)
    quiet_for = now - progress
    threshold = proposal.stall_threshold
    stalled = unfinished and quiet_for > threshold
    reasons = _milestone_reasons(milestones, proposal)
    if stalled:
        reasons.append(
            Reason(
                "stalled",
                "red",
                f"no milestone event for {_days(quiet_for)}, stall threshold {_days(threshold)}",
                since=progress,
                events=progress_refs,
            )
        )
    elif unfinished and quiet_for > threshold / 2:
        reasons.append(
            Reason(
                "progress_ageing",
                "amber",
                f"last milestone event {_days(quiet_for)} ago, over half the stall threshold "
                f"of {_days(threshold)}",
                since=progress,
                events=progress_refs,
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
                    since=h.reported_at,
                    events=(h.event,) if h.event else (),
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
    deps = dependencies(catalogue, state, now)
    proposals = {
        p.id: proposal_health(catalogue, p, state, kpis, now, deps) for p in catalogue.proposals
    }
    return ProgrammeHealth(at=now, proposals=proposals, kpis=kpis)


# Keeping a rating up to date: rate again only what a change of the state can move.


class Touched(NamedTuple):
    """What changed in a state since it was last rated: milestone keys and KPI ids."""

    milestones: frozenset[MilestoneKey] = frozenset()
    kpis: frozenset[str] = frozenset()


def changed_state(
    state: ProgrammeState,
    milestones: Iterable[MilestoneState] = (),
    observations: Iterable[KpiObservation] = (),
) -> tuple[ProgrammeState, Touched]:
    """``state`` with ``milestones`` and ``observations`` put in (each replaces the one of
    its key: milestone, or KPI and period), and what that changed (a row equal to the one
    held changes nothing). ``state`` is left as it was; what did not change is shared."""
    by_key = dict(state.milestones)
    grouped = dict(state.milestones_by_proposal)
    touched_milestones: set[MilestoneKey] = set()
    for s in milestones:
        key = (s.proposal, s.milestone)
        if by_key.get(key) != s:
            by_key[key] = s
            touched_milestones.add(key)
    regrouped: dict[str, dict[str, MilestoneState]] = {}
    for pid, mid in touched_milestones:
        regrouped.setdefault(pid, {**grouped.get(pid, {})})[mid] = by_key[(pid, mid)]
    grouped.update(regrouped)
    kpi_observations = dict(state.kpi_observations)
    touched_kpis: set[str] = set()
    for o in observations:
        held = {x.period: x for x in kpi_observations.get(o.kpi, ())}
        if held.get(o.period) != o:
            held[o.period] = o
            # In period order, as the projection is read (see queries.load_state).
            kpi_observations[o.kpi] = [held[p] for p in sorted(held)]
            touched_kpis.add(o.kpi)
    changed = ProgrammeState(milestones=by_key, kpi_observations=kpi_observations)
    changed.__dict__["milestones_by_proposal"] = grouped  # the cached grouping, kept up to date
    return changed, Touched(frozenset(touched_milestones), frozenset(touched_kpis))


def rerate(
    catalogue: Catalogue,
    previous: ProgrammeHealth,
    state: ProgrammeState,
    touched: Touched,
    now: datetime,
    *,
    holds_until: datetime,
) -> ProgrammeHealth:
    """:func:`programme_health` of ``state`` at ``now``, given ``previous``: the rating of
    the state before ``touched`` changed, at ``previous.at``, which held until
    ``holds_until`` (its :func:`valid_until`).

    While the clock is within ``[previous.at, holds_until)`` it changes no rating, so only
    what ``touched`` can move is rated again: the KPIs changed, the proposals whose
    milestones changed or that a changed KPI evidences, and every proposal with a
    milestone downstream of a changed one (its forecast and risk come from upstream); the
    rest is ``previous``'s. Otherwise everything is rated again. Every rating is made by
    the functions :func:`programme_health` calls: this only chooses what to call them for.
    """
    if not previous.at <= now < holds_until:
        return programme_health(catalogue, state, now)
    kpis = dict(previous.kpis)
    for kid in touched.kpis:
        kpi = catalogue.kpi_by_id.get(kid)
        if kpi is not None:
            kpis[kid] = kpi_health(kpi, state.kpi_observations.get(kid, ()), now)
    rate = rated_again(catalogue, touched)
    if not rate and not touched.kpis:
        return ProgrammeHealth(at=now, proposals=previous.proposals, kpis=previous.kpis)
    deps = dependencies(catalogue, state, now, [(p.id, m.id) for p in rate for m in p.milestones])
    proposals = dict(previous.proposals)
    for p in rate:
        proposals[p.id] = proposal_health(catalogue, p, state, kpis, now, deps)
    return ProgrammeHealth(at=now, proposals=proposals, kpis=kpis)


def rated_again(catalogue: Catalogue, touched: Touched) -> list[Proposal]:
    """The proposals :func:`rerate` rates again for ``touched`` while the clock changes no
    rating: those whose milestones changed or that a changed KPI evidences, and every
    proposal with a milestone downstream of a changed one."""
    again = {
        pid
        for kid in touched.kpis
        if (kpi := catalogue.kpi_by_id.get(kid)) is not None
        for pid in kpi.evidences
    }
    again.update(pid for pid, _ in catalogue.downstream(touched.milestones))
    return [p for pid in again if (p := catalogue.proposal_by_id.get(pid)) is not None]


# When a rating expires: the clock alone changes it only at instants known in advance.

EPSILON = timedelta(microseconds=1)
ONE_HOUR = timedelta(hours=1)


def valid_until(catalogue: Catalogue, state: ProgrammeState, now: datetime) -> datetime:
    """The earliest instant after ``now`` at which the clock alone can change the rating of
    ``state``: :func:`programme_health` gives the same proposals and KPIs at every instant
    of ``[now, valid_until)``.

    Due dates, grace periods counted from them, forecasts and KPI expected values move by
    the UTC day, so the next midnight bounds it; within the day, a proposal's rating moves
    when its quiet time passes half its stall threshold and the threshold (the rules
    compare strictly, so just after), when a grace period that is not whole days ends, and,
    while a reason counts the quiet time, when that count (days, or hours under a day)
    ticks.
    """
    return _earliest(
        (clock_instants(catalogue, p, state) for p in catalogue.proposals), _next_midnight(now), now
    )


class ClockInstants(NamedTuple):
    """When time alone may change one proposal's rating, as of its milestone states: fixed
    instants (due dates' ends of grace, half the stall threshold and the threshold after its
    last progress; some may be past), and the quiet-time count that ticks once past half
    the threshold."""

    fixed: tuple[datetime, ...]
    """Sorted."""
    progress: datetime
    threshold: timedelta

    def next_after(self, now: datetime) -> datetime | None:
        """The first of these instants after ``now``, if any."""
        i = bisect_right(self.fixed, now)
        first = self.fixed[i] if i < len(self.fixed) else None
        quiet_for = now - self.progress
        if quiet_for > self.threshold / 2:  # a stalled or ageing reason says how long it has been
            tick = self.progress + _next_count(quiet_for)
            first = tick if first is None else min(first, tick)
        return first


def clock_instants(
    catalogue: Catalogue, proposal: Proposal, state: ProgrammeState
) -> ClockInstants | None:
    """The :class:`ClockInstants` of ``proposal`` in ``state``; None when all its milestones
    are completed (it neither stalls nor is overdue: only the KPIs' midnights remain)."""
    states = state.milestones_by_proposal.get(proposal.id, {})
    unfinished = [
        m for m in proposal.milestones if (s := states.get(m.id)) is None or s.status != "completed"
    ]
    if not unfinished:
        return None
    progress, _ = last_progress(proposal, state, catalogue.programme_start)
    threshold = proposal.stall_threshold
    fixed = [_late_from(m.due, proposal.overdue_grace)[1] for m in unfinished]
    fixed += _quiet_changes(progress, threshold)
    return ClockInstants(tuple(sorted(fixed)), progress, threshold)


def _next_midnight(now: datetime) -> datetime:
    return _midnight(_today(now) + ONE_DAY)


def _earliest(instants: Iterable[ClockInstants | None], bound: datetime, now: datetime) -> datetime:
    for kept in instants:
        if kept is not None and (instant := kept.next_after(now)) is not None and instant < bound:
            bound = instant
    return bound


class ClockWatch:
    """:func:`valid_until` kept from one state to the next: a proposal's
    :class:`ClockInstants` are worked out again only when its milestone states changed (a
    state from :func:`changed_state` shares the untouched proposals' states with the one
    before), so a rating after a batch that touched a few proposals costs a lookup for the
    rest. Same answers as :func:`valid_until`, which a test holds."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._kept: dict[str, tuple[Mapping[str, MilestoneState] | None, ClockInstants | None]] = {}

    def valid_until(self, state: ProgrammeState, now: datetime) -> datetime:
        return _earliest(
            (self._instants(p, state) for p in self._catalogue.proposals), _next_midnight(now), now
        )

    def _instants(self, proposal: Proposal, state: ProgrammeState) -> ClockInstants | None:
        states = state.milestones_by_proposal.get(proposal.id)
        kept = self._kept.get(proposal.id)
        # The very object, held here so that it cannot be freed and its id reused.
        if kept is not None and kept[0] is states:
            return kept[1]
        instants = clock_instants(self._catalogue, proposal, state)
        self._kept[proposal.id] = (states, instants)
        return instants


def _quiet_changes(progress: datetime, threshold: timedelta) -> tuple[datetime, datetime]:
    """When quiet since ``progress`` turns a proposal amber (half its stall threshold) and
    stalled (the threshold): just after each, as the rules compare strictly."""
    return progress + threshold / 2 + EPSILON, progress + threshold + EPSILON


def _next_count(span: timedelta) -> timedelta:
    """The shortest span longer than ``span`` that :func:`_days` says differently."""
    if span >= ONE_DAY:
        return timedelta(days=span.days + 1)
    return (span // ONE_HOUR + 1) * ONE_HOUR


# History: the same rating, at each instant the rating could change.


class HistoryEntry(NamedTuple):
    """A change of a proposal's RAG, stalled or overdue state, and what brought it."""

    at: datetime
    cause: Literal["event", "clock"]
    """``event``: events of that instant; ``clock``: time alone (a stall threshold crossed,
    a due date passed, a forecast pushed by today)."""
    events: tuple[EventRef, ...]
    health: ProposalHealth
    changed: tuple[str, ...]
    """Which of rag, stalled and overdue changed; empty for the first entry."""


def _signature(health: ProposalHealth) -> tuple[object, ...]:
    return (health.rag, health.stalled, tuple(health.overdue))


def _clock_instants(
    catalogue: Catalogue,
    proposal: Proposal,
    progress_times: Sequence[datetime],
    start: datetime,
    until: datetime,
) -> set[datetime]:
    """Instants at which time alone may change the proposal's rating."""
    out: set[datetime] = set()
    for m in proposal.milestones:
        out.update(_late_from(m.due, proposal.overdue_grace))
    threshold = proposal.stall_threshold
    for t in (_midnight(catalogue.programme_start), *progress_times):
        out.update(_quiet_changes(t, threshold))
    if proposal.id in catalogue.upstream_of or any(m.follows for m in proposal.milestones):
        # Forecasts move with today's date: every midnight may push one.
        day = start.astimezone(UTC).date() + ONE_DAY
        while (midnight := _midnight(day)) <= until:
            out.add(midnight)
            day += ONE_DAY
    return {t for t in out if start < t <= until}


def proposal_history(
    catalogue: Catalogue,
    proposal: Proposal,
    milestone_events: Sequence[MilestoneState],
    kpi_events: Sequence[KpiObservation],
    until: datetime,
) -> list[HistoryEntry]:
    """Each change of ``proposal``'s rating up to ``until``, first the rating at the
    programme's start (or its first event, if earlier).

    ``milestone_events`` (of the proposal and of every proposal it depends on) and
    ``kpi_events`` (of the KPIs that evidence it) are every report in fold order (event
    time, then stream sequence), as the projections fold them. The rating at each instant
    is :func:`proposal_health` over the state those events give up to it: the same
    function as the board's, at every instant where an event or the clock can change it.
    """
    own = [s.event_time for s in milestone_events if s.proposal == proposal.id]
    times = [s.event_time for s in milestone_events] + [o.event_time for o in kpi_events]
    start = min([_midnight(catalogue.programme_start), *times])
    by_time: dict[datetime, list[EventRef]] = {}
    for s in milestone_events:
        by_time.setdefault(s.event_time, []).append(EventRef(s.source, s.event_id))
    for o in kpi_events:
        by_time.setdefault(o.event_time, []).append(EventRef(o.source, o.event_id or ""))
    kpis = {k.id: k for k in catalogue.kpis_evidencing.get(proposal.id, ())}
    clock = _clock_instants(catalogue, proposal, own, start, until)
    instants = sorted({start, *(t for t in by_time if t <= until)} | clock)
    milestones: dict[tuple[str, str], MilestoneState] = {}
    # Per KPI, its latest report and its rating, kept as reports arrive: reports come in
    # event-time order, so a report is the latest unless an earlier one is for a later period.
    latest: dict[str, KpiObservation] = {}
    rated: dict[str, KpiHealth] = {k: kpi_health(kpi, (), start) for k, kpi in kpis.items()}
    mi = ki = 0
    entries: list[HistoryEntry] = []
    previous: tuple[object, ...] | None = None
    for at in instants:
        moved = at in clock or previous is None
        while mi < len(milestone_events) and milestone_events[mi].event_time <= at:
            s = milestone_events[mi]
            milestones[(s.proposal, s.milestone)] = s
            moved = True
            mi += 1
        while ki < len(kpi_events) and kpi_events[ki].event_time <= at:
            o = kpi_events[ki]
            ki += 1
            current = latest.get(o.kpi)
            if o.kpi in kpis and (
                current is None or period_end(o.period) >= period_end(current.period)
            ):
                latest[o.kpi] = o
                reported = kpi_health(kpis[o.kpi], (o,), at)
                if reported.on_track != rated[o.kpi].on_track:
                    moved = True  # only the on-track state of a KPI enters the signature
                rated[o.kpi] = reported
        if not moved:
            continue
        state = ProgrammeState(milestones=dict(milestones))
        rating = proposal_health(
            catalogue, proposal, state, rated, at, dependencies(catalogue, state, at)
        )
        signature = _signature(rating)
        if signature != previous:
            changed = (
                ()
                if previous is None
                else tuple(
                    name
                    for name, a, b in zip(
                        ("rag", "stalled", "overdue"), previous, signature, strict=True
                    )
                    if a != b
                )
            )
            refs = tuple(by_time.get(at, ()))
            entries.append(HistoryEntry(at, "event" if refs else "clock", refs, rating, changed))
            previous = signature
    return entries


def rating_changes(
    before: ProgrammeHealth, after: ProgrammeHealth
) -> tuple[list[tuple[ProposalHealth, ProposalHealth]], list[tuple[KpiHealth, KpiHealth]]]:
    """The proposals whose (rag, stalled) and the KPIs whose on-track state differ between
    two ratings, each as (before, after), in the ratings' order."""
    proposals = [
        (b, after.proposals[pid])
        for pid, b in before.proposals.items()
        if (b.rag, b.stalled) != (after.proposals[pid].rag, after.proposals[pid].stalled)
    ]
    kpis = [
        (b, after.kpis[kid])
        for kid, b in before.kpis.items()
        if b.on_track != after.kpis[kid].on_track
    ]
    return proposals, kpis


class KpiPeriod(NamedTuple):
    """One period of a KPI: its actual (the newest report), every report, the trajectory."""

    period: str
    period_end: date
    actual: KpiObservation
    reports: tuple[KpiObservation, ...]
    """Every report of the period in fold order: the first, then each correction."""
    expected: float
    on_track: bool


def kpi_periods(kpi: Kpi, reports: Sequence[KpiObservation]) -> list[KpiPeriod]:
    """Every reported period of ``kpi`` in period order, from its reports in fold order."""
    grouped: dict[str, list[KpiObservation]] = {}
    for o in reports:
        grouped.setdefault(o.period, []).append(o)
    out = []
    for period, rows in grouped.items():
        end = period_end(period)
        expected = kpi_expected(kpi, end)
        actual = rows[-1]
        out.append(
            KpiPeriod(
                period,
                end,
                actual,
                tuple(rows),
                expected,
                not is_off_trajectory(kpi, actual.value, expected),
            )
        )
    return sorted(out, key=lambda p: (p.period_end, p.period))


def kpi_trajectory(kpi: Kpi) -> list[tuple[date, float]]:
    """The expected path as points to draw: the baseline, each year's end between, the
    target (a compound path is smooth enough at one point a year)."""
    start, end = kpi.baseline.date, kpi.target.date
    points = [start]
    points += [
        date(y, 12, 31) for y in range(start.year, end.year + 1) if start < date(y, 12, 31) < end
    ]
    points.append(end)
    return [(d, kpi_expected(kpi, d)) for d in points]
