"""The demo's story: what authority systems report about the programme, as plain data.

Pure functions of the catalogue and a clock, so the story can be tested without a server.
Milestones move from ``not_started`` through ``in_progress`` to ``completed`` around their
due dates, with monthly progress reports and the odd risk; every reporter of every KPI
returns its figure each quarter (by the KPI's own frequency), near the trajectory with a
little noise of its own; each proposal's lead (``updates.by[0]`` in the catalogue) gives a
progress update every update period: a milestone event in it, or else an
``org.cotn.update.v1`` "no change". The parts of the story there to be seen on the board:

- one proposal stalls (its last milestone event is long ago) but is not silent: its lead
  says "no change" every quarter,
- one runs late (a milestone overdue and at risk),
- one is blocked,
- one KPI lags well below its trajectory,
- one authority goes silent: it returned its KPI figures for its first two quarters, then
  stopped (``Scenario.silent``), so it is the one silent reporter of the reporting view.

Event ids are derived from what an event says (proposal, milestone, status, date), never
from when the demo runs, so playing the history again on the same data sends duplicates,
not new events. No event time is in the future.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.catalogue import Catalogue, Kpi, Proposal
from shared.health import kpi_expected
from shared.kinds.kpi import TYPE as KPI_TYPE
from shared.kinds.milestone import TYPE as MILESTONE_TYPE
from shared.kinds.update import TYPE as UPDATE_TYPE
from shared.periods import Frequency, month_of, period_end, period_of, within
from shared.reporting import next_period

DEMO_ID_PREFIX = "demo"
REPORT_LAG = timedelta(days=21)
"""How long after a quarter ends its KPI figures are reported."""
UPDATE_EVERY = timedelta(days=35)
"""How often a milestone in progress gets a progress report."""
NO_CHANGE_LAG = timedelta(days=7)
"""How long after an update period ends a lead with no milestone news says "no change"."""
SILENT_AFTER = 2
"""How many quarters the silent authority returns its figures before it stops."""
DEFAULT_FREQUENCY: Frequency = "quarterly"
"""A KPI's reporting frequency when the catalogue gives it no ``returns``."""
SEND_BACK_REASON = "Please confirm the figure against the ONS release"
"""Why the office returns the story's returned KPI figure for correction."""
_NOTES = (
    "Partners' working group met; actions on track",
    "Draft circulated to leaders for comment",
    "Evidence gathering with Northern universities under way",
    "Delivery partner procurement progressing",
    "Risk log reviewed; no new issues",
    "Officer group agreed the next steps",
)


@dataclass(frozen=True)
class Post:
    """One event an authority system sends, with its own token, to one column service."""

    authority: str
    column: str
    event: dict[str, Any]

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.event["time"])

    @property
    def event_id(self) -> str:
        return str(self.event["id"])


@dataclass(frozen=True)
class Scenario:
    """Which proposals, KPI and authority carry the story's visible troubles, and which KPI
    returns the programme office reviews.

    ``silent`` is an authority that returns its KPI figures for its first ``SILENT_AFTER``
    quarters and then stops: a silent reporter, told apart from the ``stalled`` proposal
    (whose lead keeps saying "no change"). It is chosen among KPI reporters that lead no
    proposal and are no KPI's first reporter (who sends the live figures), so its silence
    touches nothing else. ``approve`` and ``send_back`` are (KPI, reporter): the office
    approves the newest backfilled return of the first, then a correction of it is refused
    as locked; it returns the second's newest for correction.
    """

    stalled: str | None
    late: str | None
    blocked: str | None
    lagging_kpi: str | None
    silent: str | None = None
    approve: tuple[str, str] | None = None
    send_back: tuple[str, str] | None = None

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue) -> Scenario:
        """The shipped catalogue's choices, falling back to any ids another catalogue has."""
        ids = [p.id for p in catalogue.proposals]

        def pick(preferred: str, fallback_index: int) -> str | None:
            if preferred in ids:
                return preferred
            return ids[fallback_index] if len(ids) > abs(fallback_index) else None

        kpis = [k.id for k in catalogue.kpis]
        lagging = "early-stage-finance" if "early-stage-finance" in kpis else next(iter(kpis), None)
        busy = {reporter_of(p) for p in catalogue.proposals} | {
            k.reporters[0] for k in catalogue.kpis
        }
        quiet = [a for k in catalogue.kpis for a in k.reporters if a not in busy]
        silent = "cumbria" if "cumbria" in quiet else next(iter(quiet), None)
        returns = [(k.id, r) for k in catalogue.kpis if k.id != lagging for r in k.reporters]
        returns = [r for r in returns if r[1] != silent]

        def review(preferred: tuple[str, str], fallback_index: int) -> tuple[str, str] | None:
            if preferred in returns:
                return preferred
            return returns[fallback_index] if len(returns) > fallback_index else None

        return cls(
            stalled=pick("3b", -1),
            late=pick("2b", 1),
            blocked=pick("prevention", 2),
            lagging_kpi=lagging,
            silent=silent,
            approve=review(("rd-boost-gva", "np11"), 0),
            send_back=review(("life-sciences-gva", "nhsa"), 1),
        )

    def role_of(self, proposal_id: str) -> str:
        roles = {self.stalled: "stalled", self.late: "late", self.blocked: "blocked"}
        return roles.get(proposal_id, "healthy")


@dataclass(frozen=True)
class _Step:
    """One milestone report in a proposal's timeline; ``tag`` makes its id unique."""

    time: datetime
    milestone: str
    status: str
    note: str
    tag: str


def unit_noise(*key: str) -> float:
    """A number in [0, 1) fixed by ``key``: the story varies, but the same way every run."""
    digest = hashlib.sha256("/".join(key).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def at(day: date, hour: int = 9) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def reporter_of(proposal: Proposal) -> str:
    """The partner reporting ``proposal``'s milestones: the lead who owes its progress
    updates (``updates.by[0]``), or its first partner in a catalogue without updates."""
    return proposal.updates.by[0] if proposal.updates else proposal.partners[0]


def kpi_reporter(catalogue: Catalogue, kpi: Kpi) -> tuple[str, str]:
    """The authority sending ``kpi``'s live figures (its first reporter) and the column
    service it posts to."""
    return kpi.reporters[0], catalogue.column_of[kpi.evidences[0]]


def kpi_frequency(kpi: Kpi) -> Frequency:
    """How often ``kpi`` is returned: its ``returns``' frequency, quarterly without."""
    return kpi.returns.frequency if kpi.returns else DEFAULT_FREQUENCY


def milestone_event(
    *,
    event_id: str,
    source: str,
    when: datetime,
    proposal: str,
    milestone: str,
    status: str,
    note: str,
) -> dict[str, Any]:
    """A CloudEvent reporting a milestone's status."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": MILESTONE_TYPE,
        "time": when.isoformat(),
        "datacontenttype": "application/json",
        "data": {"proposal": proposal, "milestone": milestone, "status": status, "note": note},
    }


def kpi_event(
    *, event_id: str, source: str, when: datetime, kpi: Kpi, period: str, value: float
) -> dict[str, Any]:
    """A CloudEvent reporting a KPI's value for a period."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": KPI_TYPE,
        "time": when.isoformat(),
        "datacontenttype": "application/json",
        "data": {"kpi": kpi.id, "value": value, "period": period, "unit": kpi.unit},
    }


def _progress_reports(
    proposal: Proposal, milestone: str, begin: datetime, until: datetime
) -> Iterator[_Step]:
    when = begin + UPDATE_EVERY
    while when < until:
        note = _NOTES[int(unit_noise(proposal.id, milestone, when.isoformat()) * len(_NOTES))]
        yield _Step(when, milestone, "in_progress", note, f"{when:%Y%m%d}")
        when += UPDATE_EVERY


def _late_milestone(proposal: Proposal, now: datetime) -> str:
    """The milestone the late proposal is stuck on: the last one due a month or more ago."""
    due = [m.id for m in proposal.milestones if at(m.due) < now - timedelta(days=30)]
    return due[-1] if due else proposal.milestones[0].id


def _timeline(catalogue: Catalogue, proposal: Proposal, role: str, now: datetime) -> list[_Step]:
    """Every milestone report of one proposal up to ``now``, before the story's recent twists."""
    start = at(catalogue.programme_start) + timedelta(days=3 + int(unit_noise(proposal.id) * 10))
    steps = [
        _Step(start, m.id, "not_started", "Milestone registered in the delivery plan", "plan")
        for m in proposal.milestones
    ]
    stuck = _late_milestone(proposal, now) if role == "late" else None
    begin = start + timedelta(days=7)
    for index, m in enumerate(proposal.milestones):
        # From ten days late to twenty days early, differently for each milestone.
        done = at(m.due, 16) - timedelta(days=int(unit_noise(proposal.id, m.id) * 30) - 10)
        begin = min(begin, done - timedelta(days=21))
        steps.append(_Step(begin, m.id, "in_progress", "Work started", f"{begin:%Y%m%d}"))
        if role == "stalled" and index == 1:
            break  # nothing has been heard from this proposal since
        until = now - timedelta(days=45) if m.id == stuck else done - timedelta(days=7)
        steps += _progress_reports(proposal, m.id, begin, until)
        if unit_noise(proposal.id, m.id, "risk") < 0.3:
            middle = begin + (done - begin) / 2
            steps.append(
                _Step(middle, m.id, "at_risk", "Partner resourcing behind plan", f"{middle:%Y%m%d}")
            )
        if m.id == stuck:
            steps.append(
                _Step(
                    now - timedelta(days=16),
                    m.id,
                    "at_risk",
                    "Awaiting a decision from Government; the date will be missed",
                    "recent",
                )
            )
            break
        steps.append(_Step(done, m.id, "completed", "Completed and signed off", f"{done:%Y%m%d}"))
        begin = done + timedelta(days=5)
    return [s for s in steps if s.time <= now - timedelta(hours=1)]


def _current_milestone(proposal: Proposal, steps: list[_Step]) -> str | None:
    completed = {s.milestone for s in steps if s.status == "completed"}
    return next((m.id for m in proposal.milestones if m.id not in completed), None)


def _recent_twist(proposal: Proposal, role: str, steps: list[_Step], now: datetime) -> list[_Step]:
    """The last weeks: a blocked milestone for the blocked proposal, a progress report for
    a healthy one; the stalled and late proposals stay as they are."""
    current = _current_milestone(proposal, steps)
    if current is None or role in ("stalled", "late"):
        return steps
    if role == "blocked":
        when = now - timedelta(days=9)
        kept = [s for s in steps if s.milestone != current or s.time < when]
        note = "Host institution funding decision deferred; work cannot continue"
        return [*kept, _Step(when, current, "blocked", note, "recent")]
    when = now - timedelta(days=2 + int(unit_noise(proposal.id, "recent") * 8))
    if not any(s.milestone == current and s.time < when for s in steps):
        return steps
    return [*steps, _Step(when, current, "in_progress", "Monthly progress report", "recent")]


def milestone_history(catalogue: Catalogue, scenario: Scenario, now: datetime) -> list[Post]:
    """Every milestone report of every proposal and gamechanger, up to ``now``."""
    posts = []
    for proposal in catalogue.proposals:
        role = scenario.role_of(proposal.id)
        steps = _recent_twist(proposal, role, _timeline(catalogue, proposal, role, now), now)
        source = reporter_of(proposal)
        column = catalogue.column_of[proposal.id]
        for s in steps:
            event_id = (
                f"{DEMO_ID_PREFIX}-{proposal.id}-{s.milestone}-{s.status}-{s.tag}-{s.time:%Y%m%d}"
            )
            event = milestone_event(
                event_id=event_id,
                source=source,
                when=s.time,
                proposal=proposal.id,
                milestone=s.milestone,
                status=s.status,
                note=s.note,
            )
            posts.append(Post(source, column, event))
    return posts


def _periods(first: date, last: date, frequency: Frequency) -> Iterator[str]:
    """Periods of ``frequency`` (``2025-Q3`` for quarters) whose end falls in ``first`` ..
    ``last``."""
    period = period_of(first, frequency)
    while period_end(period) <= last:
        yield period
        period = next_period(period, frequency)


def kpi_value(kpi: Kpi, day: date, lagging: bool, *key: str) -> float:
    """A plausible figure near the KPI's trajectory at ``day``, or well short of it if lagging."""
    expected = kpi_expected(kpi, day)
    if lagging:
        value = kpi.baseline.value + (expected - kpi.baseline.value) * 0.3
        if len(key) > 1:  # another reporter's figure: as short, give or take a little
            value *= 1 + (unit_noise(kpi.id, *key) - 0.5) * 0.02
    else:
        value = expected * (1 + (unit_noise(kpi.id, *key) - 0.4) * 0.06)
    return float(f"{value:.4g}")


def kpi_history(catalogue: Catalogue, scenario: Scenario, now: datetime) -> list[Post]:
    """KPI returns since the programme started, from every reporter, for each period of the
    KPI's frequency, three weeks after it ends; the silent authority stops after its first
    ``SILENT_AFTER``.

    The first reporter's returns are sent last of a day, so its figure is the one the board
    shows; they keep the ids and figures of the time it was the only reporter, and the others
    name the reporter in theirs.
    """
    posts = []
    last = (now - REPORT_LAG - timedelta(hours=1)).date()
    for kpi in catalogue.kpis:
        column = catalogue.column_of[kpi.evidences[0]]
        first = max(catalogue.programme_start, kpi.baseline.date + timedelta(days=1))
        lagging = kpi.id == scenario.lagging_kpi
        periods = list(_periods(first, last, kpi_frequency(kpi)))
        for rank, source in enumerate(dict.fromkeys(kpi.reporters)):
            sent = periods[:SILENT_AFTER] if source == scenario.silent else periods
            for period in sent:
                key = (period,) if rank == 0 else (period, source)
                suffix = "" if rank == 0 else f"-{source}"
                event = kpi_event(
                    event_id=f"{DEMO_ID_PREFIX}-kpi-{kpi.id}-{period}{suffix}",
                    source=source,
                    when=at(period_end(period) + REPORT_LAG, 10) - timedelta(minutes=5 * rank),
                    kpi=kpi,
                    period=period,
                    value=kpi_value(kpi, period_end(period), lagging, *key),
                )
                posts.append(Post(source, column, event))
    return posts


def update_event(
    *, event_id: str, source: str, when: datetime, proposal: str, period: str, note: str
) -> dict[str, Any]:
    """A CloudEvent saying nothing moved on ``proposal`` in ``period``."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": UPDATE_TYPE,
        "time": when.isoformat(),
        "datacontenttype": "application/json",
        "data": {"proposal": proposal, "status": "no_change", "period": period, "note": note},
    }


def _no_change_note(role: str) -> str:
    if role == "stalled":
        return "No change: partners have not yet agreed the network's terms of reference"
    if role == "blocked":
        return "No change: waiting on the host institution's funding decision"
    return "No change this period; work continues to plan"


def update_history(
    catalogue: Catalogue, scenario: Scenario, now: datetime, milestones: list[Post]
) -> list[Post]:
    """The "no change" updates each proposal's lead sends for an update period in which it
    sent no milestone event (the stalled proposal's every period since it stalled), a week
    after the period ends; none for a catalogue without ``updates``."""
    posts = []
    for proposal in catalogue.proposals:
        updates = proposal.updates
        if updates is None:
            continue
        source = reporter_of(proposal)
        if source == scenario.silent:
            continue
        frequency = updates.frequency
        heard = {
            within(month_of(p.time), frequency)
            for p in milestones
            if p.authority == source and p.event["data"]["proposal"] == proposal.id
        }
        lag = min(NO_CHANGE_LAG, timedelta(days=updates.due_days))
        note = _no_change_note(scenario.role_of(proposal.id))
        period = period_of(catalogue.programme_start, frequency)
        while (when := at(period_end(period) + lag, 11)) <= now - timedelta(hours=1):
            if period not in heard:
                event = update_event(
                    event_id=f"{DEMO_ID_PREFIX}-update-{proposal.id}-{period}",
                    source=source,
                    when=when,
                    proposal=proposal.id,
                    period=period,
                    note=note,
                )
                posts.append(Post(source, catalogue.column_of[proposal.id], event))
            period = next_period(period, frequency)
    return posts


def history(catalogue: Catalogue, scenario: Scenario, now: datetime) -> list[Post]:
    """The whole backfill, oldest first, as of the start of ``now``'s day (UTC).

    The same on every run of a day, so a backfill sent again is answered as duplicates: an
    id names one event for ever, and the same id with another time would be a 409. The
    reports placed relative to today carry their day in their ids, so tomorrow's backfill
    sends them as new reports instead of changed ones.
    """
    today = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    milestones = milestone_history(catalogue, scenario, today)
    posts = (
        milestones
        + update_history(catalogue, scenario, today, milestones)
        + kpi_history(catalogue, scenario, today)
    )
    return sorted(posts, key=lambda p: p.time)


def newest_return(posts: list[Post], kpi: str, reporter: str) -> Post | None:
    """``reporter``'s return of ``kpi`` for the latest period among ``posts``, if any."""
    found = [
        p
        for p in posts
        if p.event["type"] == KPI_TYPE and p.authority == reporter and p.event["data"]["kpi"] == kpi
    ]
    return max(found, key=lambda p: period_end(p.event["data"]["period"]), default=None)


def correction(catalogue: Catalogue, original: Post, now: datetime) -> Post:
    """A revised figure for ``original``'s return, sent late; the same id all day (UTC)."""
    data = original.event["data"]
    kpi = catalogue.kpi_by_id[data["kpi"]]
    event = kpi_event(
        event_id=f"{DEMO_ID_PREFIX}-correction-{kpi.id}-{data['period']}",
        source=original.authority,
        when=datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC),
        kpi=kpi,
        period=data["period"],
        value=float(f"{data['value'] * 1.02:.4g}"),
    )
    return Post(original.authority, original.column, event)


def invalid_posts(catalogue: Catalogue, now: datetime, tag: str = "backfill") -> list[Post]:
    """Events a careless authority system sends, each of which a column service must refuse:
    a ``source`` that is not the token's authority, an unknown milestone, and a proposal
    posted to another column's service."""
    first = catalogue.proposals[0]
    column = catalogue.column_of[first.id]
    sender = reporter_of(first)
    impostor = next(a for a in first.partners if a != sender)
    other = next(p for p in catalogue.proposals if catalogue.column_of[p.id] != column)
    when = now - timedelta(minutes=1)
    milestone = first.milestones[0].id

    def event(name: str, source: str, proposal: Proposal, milestone: str) -> dict[str, Any]:
        return milestone_event(
            event_id=f"{DEMO_ID_PREFIX}-invalid-{name}-{tag}",
            source=source,
            when=when,
            proposal=proposal.id,
            milestone=milestone,
            status="in_progress",
            note="Sent by a misconfigured system",
        )

    return [
        Post(sender, column, event("wrong-source", impostor, first, milestone)),
        Post(sender, column, event("unknown-milestone", sender, first, "ribbon-cutting")),
        Post(
            reporter_of(other),
            column,
            event("other-column", reporter_of(other), other, other.milestones[0].id),
        ),
    ]


def story_authorities(catalogue: Catalogue) -> list[str]:
    """Every authority the story posts as, so their tokens can be issued before it starts."""
    reporters = {reporter_of(p) for p in catalogue.proposals}
    return sorted(reporters | {a for k in catalogue.kpis for a in k.reporters})


class LiveStory:
    """What the authority systems send from now on, one event per call.

    Healthy proposals report progress and now and then finish a milestone and start the
    next; KPIs other than the lagging one get their first reporter's figure for the current
    period of their frequency (a quarter: a monthly period is refused for a quarterly KPI);
    every tenth event is
    one a column service must refuse. The stalled, late and blocked proposals stay silent,
    so the board keeps showing them.
    """

    def __init__(self, catalogue: Catalogue, scenario: Scenario, past: list[Post], seed: int = 0):
        self.catalogue = catalogue
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.tick = 0
        completed = {
            (p.event["data"]["proposal"], p.event["data"]["milestone"])
            for p in past
            if p.event["type"] == MILESTONE_TYPE and p.event["data"]["status"] == "completed"
        }
        self.current = {
            p.id: next(
                (i for i, m in enumerate(p.milestones) if (p.id, m.id) not in completed),
                len(p.milestones),
            )
            for p in catalogue.proposals
            if scenario.role_of(p.id) == "healthy"
        }
        self.kpis = [k for k in catalogue.kpis if k.id != scenario.lagging_kpi]

    def next(self, now: datetime) -> Post:
        """The next event, stamped ``now``."""
        self.tick += 1
        tag = f"{now:%Y%m%dT%H%M%S}-{self.tick}"
        open_proposals = [
            pid
            for pid, i in self.current.items()
            if i < len(self.catalogue.proposal_by_id[pid].milestones)
        ]
        if self.tick % 10 == 0 or not (open_proposals or self.kpis):
            invalid = invalid_posts(self.catalogue, now, tag=f"live-{tag}")
            return invalid[(self.tick // 10) % len(invalid)]
        if self.kpis and (self.tick % 3 == 0 or not open_proposals):
            return self._kpi_report(now, tag)
        return self._progress(open_proposals[self.tick % len(open_proposals)], now, tag)

    def _kpi_report(self, now: datetime, tag: str) -> Post:
        kpi = self.kpis[(self.tick // 3) % len(self.kpis)]
        source, column = kpi_reporter(self.catalogue, kpi)
        value = kpi_value(kpi, now.date(), False, tag)
        event = kpi_event(
            event_id=f"{DEMO_ID_PREFIX}-live-{kpi.id}-{tag}",
            source=source,
            when=now,
            kpi=kpi,
            period=period_of(now.astimezone(UTC).date(), kpi_frequency(kpi)),
            value=value,
        )
        return Post(source, column, event)

    def _progress(self, proposal_id: str, now: datetime, tag: str) -> Post:
        proposal = self.catalogue.proposal_by_id[proposal_id]
        milestone = proposal.milestones[self.current[proposal_id]]
        roll = self.rng.random()
        if roll < 0.2:
            status, note = "completed", "Completed and signed off"
            self.current[proposal_id] += 1
        elif roll < 0.3:
            status, note = "at_risk", "Partner resourcing behind plan"
        else:
            status, note = "in_progress", self.rng.choice(_NOTES)
        source = reporter_of(proposal)
        event = milestone_event(
            event_id=f"{DEMO_ID_PREFIX}-live-{proposal_id}-{tag}",
            source=source,
            when=now,
            proposal=proposal_id,
            milestone=milestone.id,
            status=status,
            note=note,
        )
        return Post(source, self.catalogue.column_of[proposal_id], event)
