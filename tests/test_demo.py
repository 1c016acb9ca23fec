"""The demo story (pure) and the demo feed against a running ``cotn run --demo``."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from rich.console import Console
from runstack import RunningStack, start_stack

from services.demo.feed import Feed, demo_tokens
from services.demo.history import (
    LiveStory,
    Post,
    Scenario,
    history,
    invalid_posts,
    story_authorities,
)
from shared.catalogue import Catalogue
from shared.health import (
    KpiObservation,
    MilestoneState,
    ProgrammeState,
    programme_health,
)
from shared.kinds import KINDS
from shared.kinds.milestone import MilestoneEvent
from shared.tokens import TokenStore
from shared.validation import check_event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def problems(catalogue: Catalogue, post: Post, now: datetime = NOW) -> list[str]:
    event = KINDS.parse(post.event)
    found = check_event(
        event, catalogue=catalogue, column=post.column, authority=post.authority, now=now
    )
    return [f"{p.field}: {p.reason}" for p in found]


def state_of(posts: list[Post]) -> ProgrammeState:
    """What the aggregator would hold after storing ``posts`` (newest by event time wins)."""
    milestones: dict[tuple[str, str], MilestoneState] = {}
    kpis: dict[str, list[KpiObservation]] = {}
    for post in posts:
        e = KINDS.parse(post.event)
        if isinstance(e, MilestoneEvent):
            key = (e.data.proposal, e.data.milestone)
            if key not in milestones or milestones[key].event_time <= e.time:
                milestones[key] = MilestoneState(*key, e.data.status, e.time, e.source, e.id)
        else:
            kpis.setdefault(e.data.kpi, []).append(
                KpiObservation(e.data.kpi, e.data.period, e.data.value, e.time, e.source)
            )
    return ProgrammeState(milestones, kpis)


def test_history_is_valid_past_and_uniquely_identified(catalogue: Catalogue) -> None:
    posts = history(catalogue, Scenario.for_catalogue(catalogue), NOW)
    assert len(posts) > 100
    assert all(problems(catalogue, p) == [] for p in posts)
    assert all(p.time <= NOW for p in posts)
    assert [p.time for p in posts] == sorted(p.time for p in posts)
    keys = Counter((p.event["source"], p.event_id) for p in posts)
    assert max(keys.values()) == 1
    assert {p.authority for p in posts} <= set(story_authorities(catalogue))


def test_history_covers_every_status_and_kpi(catalogue: Catalogue) -> None:
    posts = history(catalogue, Scenario.for_catalogue(catalogue), NOW)
    statuses = {p.event["data"].get("status") for p in posts}
    assert {"not_started", "in_progress", "at_risk", "blocked", "completed"} <= statuses
    assert {p.event["data"]["kpi"] for p in posts if "kpi" in p.event["data"]} == {
        k.id for k in catalogue.kpis
    }


def test_history_shows_a_stall_and_a_kpi_off_trajectory(catalogue: Catalogue) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    health = programme_health(catalogue, state_of(history(catalogue, scenario, NOW)), NOW)
    stalled = [p.id for p in health.proposals.values() if p.stalled]
    off = [k.id for k in health.kpis.values() if k.on_track is False]
    assert stalled == [scenario.stalled] == ["3b"]
    assert off == [scenario.lagging_kpi] == ["early-stage-finance"]
    assert health.proposals["prevention"].rag == "red"
    assert any(p.rag == "green" for p in health.proposals.values())


def test_history_ids_do_not_depend_on_when_the_demo_runs(catalogue: Catalogue) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    today = {(p.authority, p.event_id): p.event for p in history(catalogue, scenario, NOW)}
    later = history(catalogue, scenario, NOW + timedelta(days=3))
    again = {(p.authority, p.event_id): p.event for p in history(catalogue, scenario, NOW)}
    assert today == again
    # Apart from the weeks-old twists ("recent"), an event sent again is the same event.
    for post in later:
        if (post.authority, post.event_id) in today and not post.event_id.endswith("-recent"):
            assert today[(post.authority, post.event_id)] == post.event


def test_invalid_posts_are_each_refused(catalogue: Catalogue) -> None:
    reasons = [problems(catalogue, p) for p in invalid_posts(catalogue, NOW)]
    assert [len(r) for r in reasons] == [1, 1, 1]
    assert reasons[0][0].startswith("source:")
    assert "unknown milestone" in reasons[1][0]
    assert "belongs to the" in reasons[2][0]


def test_live_story_posts_valid_events_and_some_refused(catalogue: Catalogue) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    story = LiveStory(catalogue, scenario, history(catalogue, scenario, NOW))
    posts = [story.next(NOW + timedelta(seconds=4 * i)) for i in range(1, 41)]
    refused = [p for p in posts if problems(catalogue, p, NOW + timedelta(minutes=5))]
    assert len(refused) == 4
    assert all(p.event_id.startswith("demo-invalid-") for p in refused)
    proposals = {p.event["data"].get("proposal") for p in posts if p not in refused}
    assert not proposals & {scenario.stalled, scenario.late, scenario.blocked}
    assert len({(p.authority, p.event_id) for p in posts}) == len(posts)


def test_demo_tokens_are_revoked_when_the_demo_ends(tmp_path, catalogue: Catalogue) -> None:
    store = TokenStore.in_dir(tmp_path)
    with demo_tokens(store, ["np11", "nhsa"]) as tokens:
        assert store.authority_of(tokens["np11"]) == "np11"
    assert store.authority_of(tokens["np11"]) is None
    assert all(r.revoked_at for r in store.list())


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> RunningStack:
    with start_stack(tmp_path_factory.mktemp("demo"), "--demo") as stack:
        yield stack


@pytest.mark.slow
def test_demo_shows_a_stalled_proposal_and_a_kpi_off_trajectory(demo_stack: RunningStack) -> None:
    def troubles() -> tuple[list[str], list[str]] | None:
        board = httpx.get(demo_stack.url + "/v1/programme", timeout=5).json()
        stalled = [p["id"] for c in board["columns"] for p in c["proposals"] if p["stalled"]]
        off = [k["id"] for k in board["kpis"] if k["on_track"] is False]
        has_history = all(p["has_progress"] for c in board["columns"] for p in c["proposals"])
        return (stalled, off) if has_history and off else None

    stalled, off = demo_stack.wait_for(troubles, "the demo's history on the board", timeout=30)
    assert "3b" in stalled
    assert "early-stage-finance" in off
    output = demo_stack.wait_for_output("refused 422", timeout=30)
    assert "refused 403" in output


@pytest.mark.slow
async def test_demo_backfill_sent_again_stores_nothing_new(
    demo_stack: RunningStack, catalogue: Catalogue
) -> None:
    demo_stack.wait_for_output("Backfill:", timeout=30)
    store = TokenStore.in_dir(demo_stack.data_dir)
    console = Console(file=io.StringIO(), width=200)
    with demo_tokens(store, story_authorities(catalogue)) as tokens:
        feed = Feed(
            catalogue=catalogue, endpoints=demo_stack.columns, tokens=tokens, console=console
        )
        try:
            tally = await feed.backfill()
        finally:
            await feed.aclose()
    assert tally.accepted == 0
    assert tally.duplicates == len(feed.past)
    assert tally.failures == []
