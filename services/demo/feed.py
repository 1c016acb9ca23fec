"""The demo feed: authority systems posting the demo story through the column services' HTTP API.

It uses only what a real authority system has: a column service's URL and a bearer token.
First it backfills the story's history (batches per authority and column, with a progress
bar), then shows a few refusals; given the aggregator's URL and an office token, it then
plays the programme office: it approves one KPI return, returns another for correction,
and shows the column service refusing a late correction of the approved one (409, locked).
Then it posts live events at a gentle pace until cancelled. Sent again (a second run of the
day), every step is answered as already done: duplicates, "already so", the same refusal.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from services.demo.history import (
    SEND_BACK_REASON,
    LiveStory,
    Post,
    Scenario,
    correction,
    history,
    invalid_posts,
    newest_return,
)
from shared.catalogue import Catalogue
from shared.tokens import TokenStore

BATCH_SIZE = 100
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
EVENT_CONTENT_TYPE = "application/cloudevents+json"
RETRY_FOR = 30.0
"""Seconds to keep retrying a post while a column service restarts or its bus is away."""
LOCK_SETTLE = 0.5
"""Seconds between an approval and the correction the lock must refuse: the lock goes from
the aggregator through the locks bucket to the column services' watchers."""
OFFICE_NAME = "demo"
"""The demo's office identity: ``office/demo``."""
LOCKED = "locked"
"""The code a column service gives each event it refuses because its return is locked."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    """What a column service answered to one post."""

    status: int
    accepted: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    """Ids of the events refused because the office has locked their return."""

    @property
    def ok(self) -> bool:
        return self.status == 202

    def describe(self) -> str:
        """What went wrong, for one line of output."""
        reasons = "; ".join(self.problems)
        return f"not sent: {reasons}" if self.status == 0 else f"refused {self.status}: {reasons}"


def _count(answer: Mapping[str, Any], *keys: str) -> int:
    """The number of ids under the first of ``keys`` the answer has (a list or a count)."""
    for key in keys:
        value = answer.get(key)
        if isinstance(value, list):
            return len(value)
        if isinstance(value, int):
            return value
    return 0


def outcome_of(response: httpx.Response) -> Outcome:
    """Read a 202 answer (ids accepted and duplicates) or a problem document."""
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code == 202:
        return Outcome(202, _count(answer, "accepted"), _count(answer, "duplicates", "duplicate"))
    errors = [e for e in answer.get("errors") or [] if isinstance(e, dict)]
    problems = [f"{e.get('field', '?')}: {e.get('reason', '')}" for e in errors]
    return Outcome(
        response.status_code,
        problems=problems or [str(answer.get("detail") or response.text)],
        locked=[str(e.get("id")) for e in errors if e.get("code") == LOCKED],
    )


@dataclass
class Tally:
    """What the column services answered to the whole backfill."""

    accepted: int = 0
    duplicates: int = 0
    locked: int = 0
    """Events not sent again because the office has locked their return since."""
    failures: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome, batch: list[Post]) -> None:
        self.accepted += outcome.accepted
        self.duplicates += outcome.duplicates
        if not outcome.ok:
            sender = f"{batch[0].authority} -> {batch[0].column}"
            self.failures += [f"{sender}: {outcome.describe()}"]


@contextmanager
def demo_tokens(store: TokenStore, authorities: list[str]) -> Iterator[dict[str, str]]:
    """Issue a token for each demo authority and revoke them all when the demo ends."""
    issued = {a: store.create(a) for a in authorities}
    try:
        yield {a: token for a, (token, _) in issued.items()}
    finally:
        for _, record in issued.values():
            store.revoke(record.token_id)


@contextmanager
def demo_office_token(store: TokenStore, name: str = OFFICE_NAME) -> Iterator[str]:
    """Issue an office token (``office/<name>``) and revoke it when the demo ends."""
    token, record = store.create_office(name)
    try:
        yield token
    finally:
        store.revoke(record.token_id)


@dataclass
class Answer:
    """What the aggregator answered to one review."""

    status: int
    body: dict[str, Any]

    def describe(self) -> str:
        """The answer, for one line of output."""
        state = self.body.get("state", "?")
        lock = f" ({self.body['lock']})" if self.body.get("lock") else ""
        if self.status == 201:
            return f"{state}{lock}"
        if self.status == 200:
            return f"already so: {state}{lock}"
        errors = [e for e in self.body.get("errors") or [] if isinstance(e, dict)]
        reasons = "; ".join(f"{e.get('field', '?')}: {e.get('reason', '')}" for e in errors)
        what = "not sent" if self.status == 0 else f"refused {self.status}"
        return f"{what}: {reasons or self.body.get('detail', '')}"


class Feed:
    """Posts the demo story to the column services at ``endpoints`` (column id -> base URL).

    With the aggregator's base URL and an office token, the backfill ends with the office's
    reviews; without either, it leaves them out.
    """

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        endpoints: Mapping[str, str],
        tokens: Mapping[str, str],
        console: Console,
        clock: Callable[[], datetime] = utc_now,
        client: httpx.AsyncClient | None = None,
        aggregator: str | None = None,
        office_token: str | None = None,
    ):
        self.catalogue = catalogue
        self.scenario = Scenario.for_catalogue(catalogue)
        self.endpoints = endpoints
        self.tokens = tokens
        self.aggregator = aggregator.rstrip("/") if aggregator else None
        self.office_token = office_token
        self.console = console
        self.clock = clock
        self.client = client or httpx.AsyncClient(timeout=10.0)
        self.past: list[Post] = []

    def story(self) -> list[Post]:
        """The backfill this feed sends, as of now."""
        return history(self.catalogue, self.scenario, self.clock())

    async def post(self, posts: list[Post]) -> Outcome:
        """Send posts of one authority to one column service, as one event or a batch.

        Retries with the same ids while the service is unreachable or answers 503 (or 429,
        over the token's rate limit), as the contract asks of a client, waiting what
        Retry-After says; gives up after ``RETRY_FOR`` seconds.
        """
        first = posts[0]
        url = self.endpoints[first.column].rstrip("/") + "/v1/events"
        single = len(posts) == 1
        headers = {
            "Authorization": f"Bearer {self.tokens[first.authority]}",
            "Content-Type": EVENT_CONTENT_TYPE if single else BATCH_CONTENT_TYPE,
        }
        body = first.event if single else [p.event for p in posts]
        deadline = asyncio.get_running_loop().time() + RETRY_FOR
        while True:
            try:
                response = await self.client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                outcome = Outcome(0, problems=[f"cannot reach {url}: {exc!s}"])
                wait = 1.0
            else:
                outcome = outcome_of(response)
                if response.status_code not in (429, 503):
                    return outcome
                wait = float(response.headers.get("Retry-After", "1"))
            if asyncio.get_running_loop().time() + wait > deadline:
                return outcome
            await asyncio.sleep(wait)

    async def backfill(self) -> Tally:
        """Send the story's history with a progress bar; then the refusals. Returns the tally."""
        self.past = self.story()
        batches = list(_batches(self.past))
        tally = Tally()
        first, last = self.past[0].time, self.past[-1].time
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task(
                f"Backfilling {first:%Y-%m} .. {last:%Y-%m}", total=len(self.past)
            )
            for batch in batches:
                tally.add(await self.post_unlocked(batch, tally), batch)
                progress.advance(task, len(batch))
        locked = f", {tally.locked} locked by the office (not sent again)" if tally.locked else ""
        self.console.print(
            Text(
                f"Backfill: {len(self.past)} events, {tally.accepted} accepted, "
                f"{tally.duplicates} duplicates (already sent){locked}, "
                f"{len(tally.failures)} failed batches"
            )
        )
        for line in tally.failures:
            self.console.print(Text(f"  ✗ {line}", style="red"), soft_wrap=True)
        await self.show_refusals()
        await self.show_reviews()
        return tally

    async def post_unlocked(self, batch: list[Post], tally: Tally) -> Outcome:
        """Post a batch; when the only refusal is of events whose return the office has
        locked since they were first sent (a second run), post the rest without them."""
        outcome = await self.post(batch)
        if outcome.status != 409 or not outcome.locked:
            return outcome
        if len(outcome.locked) != len(outcome.problems):
            return outcome
        held = set(outcome.locked)
        rest = [p for p in batch if p.event_id not in held]
        tally.locked += len(batch) - len(rest)
        return await self.post(rest) if rest else Outcome(202)

    async def show_refusals(self) -> None:
        """Post the careless events and show how the column services refuse them."""
        self.console.print(Text("Events a misconfigured system sends, and the answers:"))
        for post in invalid_posts(self.catalogue, self.clock()):
            self.report(post, await self.post([post]))

    async def show_reviews(self) -> None:
        """As the programme office: approve one return, return another for correction, then
        send a correction of the approved one, which its column service refuses as locked.
        Skipped without the aggregator's URL or an office token."""
        if self.aggregator is None or self.office_token is None:
            return
        approve = self._newest(self.scenario.approve)
        send_back = self._newest(self.scenario.send_back)
        if approve is None and send_back is None:
            return
        self.console.print(Text("The programme office reviews returns, and the answers:"))
        if approve is not None:
            await self.review(approve, "approve")
        if send_back is not None:
            await self.review(send_back, "return", SEND_BACK_REASON)
        if approve is not None:
            await asyncio.sleep(LOCK_SETTLE)
            late = correction(self.catalogue, approve, self.clock())
            self.console.print(Text("A correction of the approved return, sent after it:"))
            self.report(late, await self.post([late]))

    def _newest(self, which: tuple[str, str] | None) -> Post | None:
        return newest_return(self.past, *which) if which else None

    async def review(self, post: Post, action: str, reason: str | None = None) -> Answer:
        """Post one review of ``post``'s return to ``POST /v1/reviews`` and print the answer.

        Retries while the aggregator has not yet stored the return (a 422 naming the
        period), cannot be reached, or answers 503; gives up after ``RETRY_FOR`` seconds.
        """
        assert self.aggregator is not None
        data = post.event["data"]
        body = {
            "action": action,
            "kpi": data["kpi"],
            "period": data["period"],
            "reporter": post.authority,
            **({"reason": reason} if reason else {}),
        }
        headers = {"Authorization": f"Bearer {self.office_token}"}
        url = f"{self.aggregator}/v1/reviews"
        deadline = asyncio.get_running_loop().time() + RETRY_FOR
        while True:
            try:
                response = await self.client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                answer = Answer(0, {"detail": f"cannot reach {url}: {exc!s}"})
            else:
                answer = Answer(response.status_code, _json_object(response))
                if not _not_stored_yet(answer) and response.status_code != 503:
                    break
            if asyncio.get_running_loop().time() + 0.5 > deadline:
                break
            await asyncio.sleep(0.5)
        what = f"{action} {data['kpi']} {data['period']} from {post.authority}"
        because = f" ({reason!r})" if reason else ""
        line = Text(f"{self.clock():%H:%M:%S} office/{OFFICE_NAME} {what}{because}: ")
        line.append(answer.describe(), style="green" if answer.status in (200, 201) else "red")
        self.console.print(line, soft_wrap=True)
        return answer

    def report(self, post: Post, outcome: Outcome) -> None:
        """One line per event: who sent what, and what the column service answered."""
        data = post.event["data"]
        what = (
            f"{data['proposal']}/{data['milestone']} {data['status']}"
            if "proposal" in data
            else f"{data['kpi']} {data['period']} = {data['value']:g}"
        )
        line = Text(f"{self.clock():%H:%M:%S} {post.authority} -> {post.column} {what}: ")
        if outcome.ok:
            line.append("duplicate" if outcome.duplicates else "accepted", style="green")
        else:
            line.append(outcome.describe(), style="red")
        self.console.print(line, soft_wrap=True)

    async def live(self, interval: float = 4.0, seed: int | None = None) -> None:
        """Post one event every ``interval`` seconds or so, until cancelled."""
        story = LiveStory(self.catalogue, self.scenario, self.past or self.story())
        jitter = random.Random(seed)
        while True:
            await asyncio.sleep(interval * jitter.uniform(0.5, 1.5))
            post = story.next(self.clock())
            self.report(post, await self.post([post]))

    async def aclose(self) -> None:
        await self.client.aclose()


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {"detail": response.text}
    return answer if isinstance(answer, dict) else {"detail": response.text}


def _not_stored_yet(answer: Answer) -> bool:
    """A 422 saying no such return was received: the aggregator has not stored it yet."""
    errors = answer.body.get("errors") or []
    return answer.status == 422 and any(
        isinstance(e, dict)
        and e.get("field") == "period"
        and "was received" in str(e.get("reason"))
        for e in errors
    )


def _sender(post: Post) -> tuple[str, str]:
    return (post.column, post.authority)


def _batches(posts: list[Post]) -> Iterator[list[Post]]:
    """Posts grouped by authority and column (one token, one service), in batches."""
    for _, group in groupby(sorted(posts, key=_sender), key=_sender):
        items = list(group)
        for start in range(0, len(items), BATCH_SIZE):
            yield items[start : start + BATCH_SIZE]
