"""Who owes which return, what came in on time, late or not at all: pure functions.

An **obligation** is one return one authority owes for one period: a KPI's actual from
each of its reporters (``Kpi.returns``), or a proposal's progress update from each partner
that owes one (``Proposal.updates``). A progress update is any milestone event or an
``org.cotn.update.v1`` ("no change") of the proposal whose period lies in the obligation's
period; a KPI return is a KPI event for the period from the reporter. An event kept aside
by a lock is not a return.

A return is **on time** when it was *received* (stored by JetStream) by the end of its due
day (UTC): the ``time`` a sender wrote cannot make a backdated return timely. Returns nobody
owed (a partner that does not owe updates, a period outside a reporter's window) are
**extra**: counted apart, so rates never exceed 100 %. A period is owed once it has started
and ends on or after the programme's start; a return not received is **pending** until its
due day has passed and **missing** after. An authority whose newest past-due return of an
obligation is missing is a **silent reporter** for it: different from a stalled proposal
(reports arrive, no milestone moves) and an overdue milestone (a date passed).

The clock comes in as ``today``/``now``; nothing here reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal

from shared.catalogue import Catalogue, Returns
from shared.periods import Frequency, period_end, period_of, period_start, within

ObligationKind = Literal["kpi", "update"]
ReturnState = Literal["on_time", "late", "missing", "pending"]
STATES: tuple[ReturnState, ...] = ("on_time", "late", "missing", "pending")

ReturnKey = tuple[str, str, str, str]
"""(kind, ref, authority, period): ``ref`` is the KPI id or the proposal id."""


@dataclass(frozen=True, slots=True)
class Obligation:
    """One return one authority owes for one period, due by the end of ``due`` (UTC)."""

    kind: ObligationKind
    ref: str
    authority: str
    period: str
    due: date
    column: str

    @property
    def key(self) -> ReturnKey:
        return (self.kind, self.ref, self.authority, self.period)


@dataclass(frozen=True, slots=True)
class Status:
    """Where one obligation stands: ``received`` is when its first return was stored."""

    obligation: Obligation
    state: ReturnState
    received: datetime | None


@dataclass(frozen=True, slots=True)
class Completeness:
    """One authority's returns for one period (of one column, or of all)."""

    authority: str
    period: str
    expected: int
    on_time: int
    late: int
    missing: int
    pending: int
    extra: int

    @property
    def received(self) -> int:
        return self.on_time + self.late

    @property
    def due(self) -> int:
        """Returns whose due day has passed: what the rates are of."""
        return self.on_time + self.late + self.missing

    @property
    def completeness(self) -> float | None:
        """Received of those due, 0..1; None while nothing is due."""
        return self.received / self.due if self.due else None

    @property
    def timeliness(self) -> float | None:
        """Received on time of those due, 0..1; None while nothing is due."""
        return self.on_time / self.due if self.due else None


@dataclass(frozen=True, slots=True)
class Silence:
    """An authority silent on an obligation: its newest due return is missing, and so have
    been the ``periods`` before it since the one due on ``since``."""

    kind: ObligationKind
    ref: str
    authority: str
    column: str
    periods: tuple[str, ...]
    since: date
    """The due day of the first return of the run that is missing."""


def owed_periods(
    returns: Returns, start: date, today: date, authority: str
) -> tuple[tuple[str, date], ...]:
    """The periods of ``returns.frequency`` ``authority`` owes returns for, each with its due
    day: ending on or after ``start`` (the programme's), started by ``today``, and within
    its window if it has one."""
    window = returns.window_of(authority)
    since = max(start, window.since) if window and window.since else start
    until = min(today, window.until) if window and window.until else today
    return _periods(returns.frequency, returns.due_days, since, until)


@lru_cache(maxsize=4096)
def _periods(
    frequency: Frequency, due_days: int, since: date, until: date
) -> tuple[tuple[str, date], ...]:
    # The same for every reporter without a window of its own: made once, not per reporter.
    out = []
    period = period_of(since, frequency)
    while period_start(period) <= until:
        out.append((period, period_end(period) + timedelta(days=due_days)))
        period = next_period(period, frequency)
    return tuple(out)


def next_period(period: str, frequency: Frequency) -> str:
    """The period of ``frequency`` after ``period``."""
    return period_of(period_end(period) + timedelta(days=1), frequency)


def obligations(
    catalogue: Catalogue, today: date, authority: str | None = None
) -> list[Obligation]:
    """Every return owed by ``today`` (by ``authority`` only, if given), KPIs first, in
    catalogue order, then by period."""
    start = catalogue.programme_start
    found: list[Obligation] = []
    for kpi in catalogue.kpis:
        if kpi.returns is None:
            continue
        column = catalogue.home_of_kpi(kpi.id)[0]
        for owing in _owing(kpi.reporters, authority):
            found += (
                Obligation("kpi", kpi.id, owing, p, due, column)
                for p, due in owed_periods(kpi.returns, start, today, owing)
            )
    for proposal in catalogue.proposals:
        updates = proposal.updates
        if updates is None:
            continue
        column = catalogue.column_of[proposal.id]
        for owing in _owing(updates.by, authority):
            found += (
                Obligation("update", proposal.id, owing, p, due, column)
                for p, due in owed_periods(updates, start, today, owing)
            )
    return found


def _owing(owers: list[str], authority: str | None) -> list[str]:
    unique = list(dict.fromkeys(owers))
    return unique if authority is None else [a for a in unique if a == authority]


def update_period(catalogue: Catalogue, proposal: str, period: str) -> str | None:
    """The update period a progress event of ``period`` (its month, or the period an update
    names) counts for, or None when the proposal owes none or the period is coarser."""
    updates = catalogue.proposal_by_id[proposal].updates
    return within(period, updates.frequency) if updates else None


def on_time(received: datetime, due: date) -> bool:
    """Received by the end of the due day, UTC."""
    return received.astimezone(UTC).date() <= due


def statuses(
    owed: Iterable[Obligation], received: Mapping[ReturnKey, datetime], today: date
) -> list[Status]:
    """Each obligation's state; ``received`` maps a return's key to when its first return
    was stored."""
    out = []
    for obligation in owed:
        at = received.get(obligation.key)
        if at is not None:
            state: ReturnState = "on_time" if on_time(at, obligation.due) else "late"
        else:
            state = "missing" if today > obligation.due else "pending"
        out.append(Status(obligation, state, at))
    return out


def extra_returns(owed: Iterable[Obligation], received: Iterable[ReturnKey]) -> list[ReturnKey]:
    """Returns received that nobody owed, in key order."""
    keys = {o.key for o in owed}
    return sorted(k for k in received if k not in keys)


def completeness(found: Iterable[Status], extra: Iterable[ReturnKey]) -> list[Completeness]:
    """Per (authority, period): expected, on time, late, missing, pending and extra; sorted
    by authority, then period."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for status in found:
        row = counts.setdefault((status.obligation.authority, status.obligation.period), {})
        row[status.state] = row.get(status.state, 0) + 1
    for _kind, _ref, authority, period in extra:
        row = counts.setdefault((authority, period), {})
        row["extra"] = row.get("extra", 0) + 1
    return [
        Completeness(
            authority=authority,
            period=period,
            expected=sum(row.get(s, 0) for s in STATES),
            on_time=row.get("on_time", 0),
            late=row.get("late", 0),
            missing=row.get("missing", 0),
            pending=row.get("pending", 0),
            extra=row.get("extra", 0),
        )
        for (authority, period), row in sorted(counts.items())
    ]


def silent_reporters(found: Iterable[Status]) -> list[Silence]:
    """Each (obligation, authority) whose newest past-due return is missing, with the run of
    missing periods it ends; sorted by authority, kind and ref."""
    due_by: dict[tuple[str, str, str], list[Status]] = {}
    for status in found:
        if status.state != "pending":
            o = status.obligation
            due_by.setdefault((o.authority, o.kind, o.ref), []).append(status)
    out = []
    for (authority, _kind, ref), runs in sorted(due_by.items()):
        runs.sort(key=lambda s: s.obligation.due)
        missing: list[Status] = []
        for status in reversed(runs):
            if status.state != "missing":
                break
            missing.append(status)
        if missing:
            missing.reverse()
            first = missing[0].obligation
            out.append(
                Silence(
                    kind=first.kind,
                    ref=ref,
                    authority=authority,
                    column=first.column,
                    periods=tuple(s.obligation.period for s in missing),
                    since=first.due,
                )
            )
    return out
