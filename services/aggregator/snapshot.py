"""The live board as an immutable snapshot: read and rated once, encoded once, then served
until the store or the clock changes it.

A :class:`Snapshot` is the rating of the stored state at the instant it was built, with
what the live answers of ``/v1/programme`` and ``/v1/kpis`` are (encoded bytes and their
strong ``ETag``), each proposal's ``/v1/proposals/{id}`` encoded the first time it is asked
for, and the ``/metrics`` programme gauges' text likewise. It records two things that say
when it stops being right:

- ``version``: the store's version it was read at. Every commit that changes what the
  board reads moves the version on in the same transaction (``store_version``, moved by
  ``store.store_batch`` and ``replay``), so a commit of any replica is seen at the next
  request: one primary-key lookup per request.
- ``valid_until``: the first instant at which the clock alone can change the rating
  (:func:`shared.health.valid_until`: a stall threshold, half of one, a grace period's
  end, the next UTC midnight).

:class:`LiveBoard` holds the current snapshot and answers each live request with it while
it is fresh, else builds the next one, one build at a time, from the current one: it reads
only the projection rows written since its version (each row carries the version of the
commit that wrote it) and the locks of their returns, and rates again only what they touch
(:func:`shared.health.rerate`), unless a review or a replay since may have taken rows out
or changed locks (``store_version.rebuilt``), when it reads the store whole. Requests that
arrive meanwhile wait for the same build. Two replicas over one store therefore answer
alike, and every answer is the rating the clock's ``now`` would give; only ``generated_at``
says when the snapshot was built (the time the board was last rated), not when it was
asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from pydantic_core import to_json
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator import queries, returns
from services.aggregator.board import (
    LIVE,
    Locks,
    ProgrammeEncoder,
    kpi_list,
    programme_document,
    proposal_detail,
)
from shared.catalogue import Catalogue
from shared.health import (
    ClockWatch,
    ProgrammeHealth,
    ProgrammeState,
    Touched,
    changed_state,
    programme_health,
    rerate,
    valid_until,
)

Clock = Callable[[], datetime]
Sessions = Callable[[], AsyncSession]


class Encoded(NamedTuple):
    """A response body and its strong entity tag (quoted, as the ``ETag`` header has it)."""

    body: bytes
    etag: str


def encode(body: bytes) -> Encoded:
    """``body`` with an ETag made of its hash: equal bodies, on any replica, equal tags."""
    return Encoded(body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The live board at one store version, rated at ``health.at``; right until the store
    moves past ``version`` or the clock reaches ``valid_until``."""

    catalogue: Catalogue = field(repr=False)
    version: int
    state: ProgrammeState = field(repr=False)
    """What was rated: the next snapshot starts from it when only some rows changed."""
    health: ProgrammeHealth
    locks: Locks
    valid_until: datetime
    programme: Encoded = field(repr=False)
    """``GET /v1/programme``."""
    kpis: Encoded = field(repr=False)
    """``GET /v1/kpis``."""
    # Made the first time asked for: most proposals' pages are never read between changes.
    _proposals: dict[str, Encoded] = field(default_factory=dict, repr=False, compare=False)
    _texts: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def fresh(self, version: int, now: datetime) -> bool:
        """Whether this is still the board of a store at ``version`` at ``now``."""
        return self.version == version and self.holds_at(now)

    def holds_at(self, now: datetime) -> bool:
        """Whether the clock alone leaves the rating as it is at ``now`` (a clock set back
        before the rating, as a test's may be, needs a new one too)."""
        return self.health.at <= now < self.valid_until

    def proposal(self, proposal_id: str) -> Encoded:
        """``GET /v1/proposals/{proposal_id}`` of a proposal in the catalogue."""
        found = self._proposals.get(proposal_id)
        if found is None:
            detail = proposal_detail(self.catalogue, self.health, proposal_id, LIVE, self.locks)
            assert detail is not None, proposal_id  # the caller checked it against the catalogue
            found = self._proposals[proposal_id] = encode(detail.model_dump_json().encode())
        return found

    def text(self, name: str, render: Callable[[ProgrammeHealth, Locks], bytes]) -> bytes:
        """What ``render`` makes of this board (``/metrics``' programme gauges), made once."""
        found = self._texts.get(name)
        if found is None:
            found = self._texts[name] = render(self.health, self.locks)
        return found


def build_snapshot(
    catalogue: Catalogue,
    state: ProgrammeState,
    locks: Locks,
    version: int,
    now: datetime,
    previous: tuple[Snapshot, Touched] | None = None,
    encoder: ProgrammeEncoder | None = None,
    watch: ClockWatch | None = None,
) -> Snapshot:
    """Rate ``state`` at ``now`` and encode the board and the KPIs: a pure function. With
    ``previous`` (a snapshot of a state that differs from ``state`` by what it touched),
    only what that can change is rated again (:func:`shared.health.rerate`); with
    ``encoder``, only the proposals rated again (or whose verifications changed) are
    encoded again, the same bytes; with ``watch``, only their clock instants are worked out
    again (:class:`shared.health.ClockWatch`), the same ``valid_until``."""
    if previous is None:
        health = programme_health(catalogue, state, now)
    else:
        before, touched = previous
        health = rerate(
            catalogue, before.health, state, touched, now, holds_until=before.valid_until
        )
    # Serialised straight from the board's plain data: at thousands of milestones a model
    # per milestone would cost more than rating the programme (see board.py).
    if encoder is None:
        programme = encode(to_json(programme_document(catalogue, health, LIVE, locks)))
    else:
        body, digest = encoder.encode_tagged(health, LIVE, locks)
        programme = Encoded(body, f'"{digest}"')
    kpis = kpi_list(catalogue, health, LIVE, locks).model_dump_json().encode()
    return Snapshot(
        catalogue=catalogue,
        version=version,
        state=state,
        health=health,
        locks=locks,
        valid_until=(
            valid_until(catalogue, state, now) if watch is None else watch.valid_until(state, now)
        ),
        programme=programme,
        kpis=encode(kpis),
    )


class LiveBoard:
    """The current :class:`Snapshot` of the live board, built again when it is stale."""

    def __init__(self, *, catalogue: Catalogue, sessions: Sessions, clock: Clock) -> None:
        self._catalogue = catalogue
        self._sessions = sessions
        self._clock = clock
        self._current: Snapshot | None = None
        self._encoder = ProgrammeEncoder(catalogue)
        self._watch = ClockWatch(catalogue)
        self._building = asyncio.Lock()

    async def snapshot(self) -> Snapshot:
        """The snapshot right for the store and the clock now; raises what the store raises
        when it cannot be read."""
        async with self._sessions() as session:
            version = await queries.store_version(session=session)
        current = self._current
        if current is not None and current.fresh(version, self._clock()):
            return current
        async with self._building:
            current = self._current
            # Built while this request waited, from the version read here or a later one.
            if (
                current is not None
                and current.version >= version
                and current.holds_at(self._clock())
            ):
                return current
            current = self._current = await self._build()
        return current

    async def _build(self) -> Snapshot:
        current = self._current
        with queries.collector_paused():
            async with self._sessions() as session:
                # The version before the state: a commit between the two reads makes the
                # snapshot look older than it is (built once more), never newer.
                version = await queries.store_version(session=session)
                if current is not None and current.version <= version:
                    changed = await _changed(session, current, version)
                    if changed is not None:
                        state, touched, locks = changed
                        return build_snapshot(
                            self._catalogue, state, locks, version, self._clock(),
                            previous=(current, touched), encoder=self._encoder,
                            watch=self._watch,
                        )  # fmt: skip
                state = await queries.load_state(session=session)
                locks = await returns.locks(session=session, targets=returns.shown_targets(state))
            return build_snapshot(
                self._catalogue, state, locks, version, self._clock(),
                encoder=self._encoder, watch=self._watch,
            )  # fmt: skip


async def _changed(
    session: AsyncSession, current: Snapshot, version: int
) -> tuple[ProgrammeState, Touched, Locks] | None:
    """The state of ``current`` brought up to the store's ``version`` from the projection
    rows written since its own, what that touched, and the locks of what it shows; None
    when the rows cannot tell (a review or a replay committed since: read it all again).

    Rows of commits after ``version`` may be among those read: applying a row again is a
    no-op, so the next snapshot, from ``version``, is right all the same."""
    if version == current.version:  # the clock alone: the same state and locks
        return current.state, Touched(), current.locks
    milestones, observations = await queries.changed_since(session=session, version=current.version)
    # Read after the rows: a review or replay committed before them is seen here, and one
    # committed after them moves the version past ``version``, for the next snapshot.
    if await queries.store_rebuilt(session=session) > current.version:
        return None
    state, touched = changed_state(current.state, milestones, observations)
    # No review since: a target's lock is as it was; only which targets are shown moved.
    gone = returns.shown_targets(current.state, touched)
    locks = {t: lock for t, lock in current.locks.items() if t not in gone}
    shown = returns.shown_targets(state, touched)
    if shown:
        locks.update(await returns.locks(session=session, targets=shown))
    return state, touched, locks
