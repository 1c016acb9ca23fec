"""The board as last read from the aggregator, polled in the background, with a version
that changes when what a page shows changes (so server-sent events push only news)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.office.client import AggregatorClient, AggregatorUnavailable, Document

log = logging.getLogger("cotn.office")


@dataclass(frozen=True)
class Snapshot:
    """One reading of the board: the board (None before the first good read), when it was
    read (monotonic and wall clock), and the last error if the latest read failed."""

    board: Document | None
    read_at: float | None
    read_at_wall: float | None
    error: str | None
    version: int

    def age(self) -> float | None:
        return None if self.read_at is None else time.monotonic() - self.read_at


def _digest(board: Document) -> str:
    # generated_at is "now" on every read: leave it out, or every poll would be news.
    content = {k: v for k, v in board.items() if k != "generated_at"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class BoardWatcher:
    """Reads ``/v1/programme`` every ``interval`` seconds (conditionally: an unchanged board
    is a 304, nothing to decode); subscribers wait for a new version."""

    def __init__(
        self,
        client: AggregatorClient,
        interval: float,
        stale_after: float,
        on_read: Callable[[bool], None] = lambda ok: None,
    ):
        self._client = client
        self._on_read = on_read
        self.interval = interval
        self.stale_after = stale_after
        self._snapshot = Snapshot(None, None, None, None, 0)
        self._digest: str | None = None
        self._etag: str | None = None
        """The tag of the board last read: the aggregator answers 304 while it holds."""
        self._changed = asyncio.Event()
        self._was_stale = False

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def stale(self, snapshot: Snapshot | None = None) -> bool:
        """Whether the board shown is older than ``stale_after`` or its last read failed."""
        s = snapshot or self._snapshot
        age = s.age()
        return s.error is not None or age is None or age > self.stale_after

    def _publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def refresh(self) -> Snapshot:
        """Read the board once; a new version when its content, or its being stale, changed."""
        old = self._snapshot
        try:
            # The tag goes only with a board in hand: after a failure the board is read whole.
            board, etag = await self._client.live_programme(
                self._etag if old.board is not None and old.error is None else None
            )
        except AggregatorUnavailable as exc:
            self._on_read(False)
            news = old.error != str(exc)
            snapshot = Snapshot(old.board, old.read_at, old.read_at_wall, str(exc), old.version)
        else:
            self._on_read(True)
            self._etag = etag
            if board is None:  # unchanged since the last read (304)
                board, news = old.board, False
            else:
                digest = _digest(board)
                news = digest != self._digest or old.error is not None
                self._digest = digest
            snapshot = Snapshot(board, time.monotonic(), time.time(), None, old.version)
        stale = self.stale(snapshot)
        if news or stale != self._was_stale:
            self._was_stale = stale
            snapshot = Snapshot(
                snapshot.board,
                snapshot.read_at,
                snapshot.read_at_wall,
                snapshot.error,
                old.version + 1,
            )
            self._publish(snapshot)
        else:
            self._snapshot = snapshot
        return snapshot

    async def fresh(self) -> Snapshot:
        """The poller's latest snapshot; read now only when there is none, it is stale or the
        last read failed (a page view never waits on the aggregator while the poller works)."""
        if self.stale() or self._snapshot.error:
            return await self.refresh()
        return self._snapshot

    async def wait_newer(self, version: int, within: float) -> Snapshot:
        """The first snapshot newer than ``version``, or the current one after ``within`` s."""
        if self._snapshot.version > version:
            return self._snapshot
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), within)
        return self._snapshot

    async def run(self) -> None:
        """Poll for ever (until cancelled); a failed read is kept as the snapshot's error."""
        while True:
            try:
                await self.refresh()
            except Exception:  # never let one bad answer end the live updates
                log.exception("board refresh failed")
            await asyncio.sleep(self.interval)
