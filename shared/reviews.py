"""What the programme office reviews, and the locks an approval sets: pure definitions.

A **return** is what the office reviews: a KPI return, one reporter's actual of one KPI for
one period, or a milestone's completion. Each has one **target**, a dotted name that is also
its key in the locks bucket (NATS key-value keys are dotted tokens):

- ``kpi.<kpi>.<period>.<reporter>``
- ``milestone.<proposal>.<milestone>``

A review (``org.cotn.review.v1``) approves or returns a KPI return, verifies or returns a
completion, or reopens either. Approval and verification **lock** the target: a later event
for it is refused at the column services (they watch the bucket) and, should one have been
accepted before the lock reached its service, kept aside by the aggregator (stored, never
applied). Whether an event is kept aside is decided by stream order alone (a lock holds the
events after its review and before the next reopen), so replicas, redeliveries and replays
all agree.

The office's identities are not authorities: their events' ``source`` is
``office/<name>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal, NamedTuple

OFFICE_PREFIX = "office/"
"""The ``source`` of every event an office identity sends: ``office/<name>``."""

LOCKS_BUCKET = "COTN_LOCKS"
"""Key-value bucket of the locked targets (key: the target), watched by the column services."""
LOCKS_STREAM = f"KV_{LOCKS_BUCKET}"
LOCKS_SUBJECTS = f"$KV.{LOCKS_BUCKET}.>"

Action = Literal["approve", "verify", "return", "reopen"]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
LOCKING: frozenset[str] = frozenset({"approve", "verify"})

ReviewState = Literal["submitted", "approved", "verified", "returned"]


def office_source(name: str) -> str:
    return f"{OFFICE_PREFIX}{name}"


def is_office(source: str) -> bool:
    return source.startswith(OFFICE_PREFIX)


def kpi_target(kpi: str, period: str, reporter: str) -> str:
    return f"kpi.{kpi}.{period}.{reporter}"


def milestone_target(proposal: str, milestone: str) -> str:
    return f"milestone.{proposal}.{milestone}"


class Target(NamedTuple):
    """A target's parts: ``kind`` is ``kpi`` (ref, period, reporter) or ``milestone``
    (proposal, milestone)."""

    kind: Literal["kpi", "milestone"]
    parts: tuple[str, ...]


def parse_target(target: str) -> Target:
    """The parts of a target; ValueError if ``target`` is not one."""
    kind, _, rest = target.partition(".")
    parts = tuple(rest.split("."))
    if kind == "kpi" and len(parts) == 3 and all(parts):
        return Target("kpi", parts)
    if kind == "milestone" and len(parts) == 2 and all(parts):
        return Target("milestone", parts)
    raise ValueError(f"{target!r} is not kpi.<kpi>.<period>.<reporter> nor milestone.<p>.<m>")


class Review(NamedTuple):
    """One stored review of a target, in stream order."""

    target: str
    action: str
    stream_seq: int
    source: str
    event_id: str
    event_time: datetime
    reason: str | None = None


def holding_review(reviews: Sequence[Review], stream_seq: int) -> Review | None:
    """The approval or verification that holds an event at ``stream_seq`` of a target, given
    the target's reviews sorted by stream sequence: the newest locking review before it with
    no reopen between; None when the target was not locked at that point of the stream."""
    holder = None
    for review in reviews:
        if review.stream_seq >= stream_seq:
            break
        if review.action in LOCKING:
            holder = holder or review
        elif review.action == "reopen":
            holder = None
    return holder


def lock_of(reviews: Iterable[Review]) -> Review | None:
    """The review that locks a target now (its reviews in stream order), or None."""
    holder = None
    for review in reviews:
        if review.action in LOCKING:
            holder = holder or review
        elif review.action == "reopen":
            holder = None
    return holder


def review_state(
    return_seq: int | None, reviews: Sequence[Review]
) -> tuple[ReviewState | None, Review | None]:
    """Where a return stands: its newest applied event's stream sequence (None: nothing
    received) against its reviews in stream order. A review before the newest return was
    of an earlier version (a resubmission after a return is submitted again); a reopen
    makes the return submitted again."""
    if return_seq is None:
        return None, None
    newest = None
    for review in reviews:
        if review.stream_seq > return_seq:
            newest = review
    if newest is None or newest.action == "reopen":
        return "submitted", newest
    state: ReviewState = (
        "returned"
        if newest.action == "return"
        else ("verified" if newest.action == "verify" else "approved")
    )
    return state, newest


class Lock(NamedTuple):
    """A locked target, as the locks bucket holds it (the value is this as JSON)."""

    target: str
    action: str
    """``approve`` (a KPI return) or ``verify`` (a completion)."""
    by: str
    """The office identity that approved: ``office/<name>``."""
    at: str
    """When, RFC 3339 UTC."""
    review: str
    """The review event's id (its source is ``by``)."""

    def encode(self) -> bytes:
        return json.dumps(self._asdict(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> Lock:
        """The lock a bucket value holds; ValueError for a value that is not one."""
        try:
            raw = json.loads(value)
            return cls(**{name: str(raw[name]) for name in cls._fields})
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a lock: {value[:80]!r}") from exc

    def describe(self) -> str:
        """The lock for people: what is locked, by whom and since when."""
        what = "approved" if self.action == "approve" else "verified"
        return f"{self.target} was {what} by {self.by} at {self.at}"
