"""The demo story (pure) and the demo feed against a running ``cotn run --demo``."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from rich.console import Console
from runstack import RunningStack, start_stack

from services.demo.feed import Feed, demo_office_token, demo_tokens
from services.demo.history import (
    SILENT_AFTER,
    LiveStory,
    Post,
    Scenario,
    history,
    invalid_posts,
    kpi_history,
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
from shared.kinds.kpi import KpiEvent
from shared.kinds.milestone import TYPE as MILESTONE_TYPE
from shared.kinds.milestone import MilestoneEvent
from shared.kinds.update import TYPE as UPDATE_TYPE
from shared.kinds.update import UpdateEvent
from shared.periods import frequency_of, month_of
from shared.reporting import ReturnKey, obligations, silent_reporters, statuses, update_period
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
        elif isinstance(e, KpiEvent):
            kpis.setdefault(e.data.kpi, []).append(
                KpiObservation(e.data.kpi, e.data.period, e.data.value, e.time, e.source)
            )
    return ProgrammeState(milestones, kpis)


def received_by_event_time(catalogue: Catalogue, posts: list[Post]) -> dict[ReturnKey, datetime]:
    """Each return's key and when the story means it to arrive: its event's time (a real run
    receives the whole backfill now, so all of it is late there)."""
    received: dict[ReturnKey, datetime] = {}
    for post in posts:
        e = KINDS.parse(post.event)
        if isinstance(e, KpiEvent):
            key: ReturnKey | None = ("kpi", e.data.kpi, e.source, e.data.period)
        elif isinstance(e, MilestoneEvent | UpdateEvent):
            named = getattr(e.data, "period", None) or month_of(e.time)
            period = update_period(catalogue, e.data.proposal, named)
            key = ("update", e.data.proposal, e.source, period) if period else None
        else:
            key = None
        if key is not None and (key not in received or e.time < received[key]):
            received[key] = e.time
    return received


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


def test_every_reporter_returns_each_quarter_but_the_silent_authority(
    catalogue: Catalogue,
) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    assert scenario.silent == "cumbria"
    assert scenario.silent not in {p.updates.by[0] for p in catalogue.proposals if p.updates}
    returns: dict[tuple[str, str], list[str]] = {}
    for post in kpi_history(catalogue, scenario, NOW):
        data = post.event["data"]
        returns.setdefault((data["kpi"], post.authority), []).append(data["period"])
        assert frequency_of(data["period"]) == "quarterly"
    for kpi in catalogue.kpis:
        quarters = returns[(kpi.id, kpi.reporters[0])]
        assert len(quarters) >= 3
        for reporter in kpi.reporters:
            expected = quarters[:SILENT_AFTER] if reporter == scenario.silent else quarters
            assert returns[(kpi.id, reporter)] == expected, (kpi.id, reporter)
    # Each reporter's own figure, a little apart from the others'.
    exports = {
        p.event["data"]["value"]
        for p in kpi_history(catalogue, scenario, NOW)
        if p.event["data"]["kpi"] == "exports" and p.event["data"]["period"] == quarters[-1]
    }
    assert len(exports) > 1


def test_the_stalled_proposal_says_no_change_each_quarter(catalogue: Catalogue) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    posts = history(catalogue, scenario, NOW)
    stalled = catalogue.proposal_by_id[str(scenario.stalled)]
    assert stalled.updates is not None
    updates = [p for p in posts if p.event["type"] == UPDATE_TYPE]
    assert updates and {p.event["data"]["proposal"] for p in updates} == {stalled.id}
    assert all(p.authority == stalled.updates.by[0] for p in updates)
    assert all(p.event["data"]["status"] == "no_change" for p in updates)
    assert all(p.event["data"]["note"] for p in updates)
    last_milestone = max(
        p.time
        for p in posts
        if p.event["type"] == MILESTONE_TYPE and p.event["data"]["proposal"] == stalled.id
    )
    periods = [p.event["data"]["period"] for p in updates]
    # Every quarter since the last milestone event, up to the last one ended a week ago.
    assert periods == ["2025-Q4", "2026-Q1", "2026-Q2", "2026-Q3"]
    assert all(p.time > last_milestone for p in updates)


def test_rated_as_the_story_means_one_authority_is_silent_and_no_lead(
    catalogue: Catalogue,
) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    posts = history(catalogue, scenario, NOW)
    today = NOW.date()
    found = statuses(obligations(catalogue, today), received_by_event_time(catalogue, posts), today)
    silent = silent_reporters(found)
    assert [(s.kind, s.ref, s.authority) for s in silent] == [("kpi", "exports", "cumbria")]
    assert silent[0].periods[0] == "2025-Q3"
    assert not [s for s in found if s.state == "late"]
    updates = [s for s in found if s.obligation.kind == "update"]
    assert {s.state for s in updates} <= {"on_time", "pending"}
    assert any(s.obligation.ref == scenario.stalled and s.state == "on_time" for s in updates)
    # The board still shows the stalled proposal stalled: "no change" moves no milestone.
    health = programme_health(catalogue, state_of(posts), NOW)
    assert health.proposals[str(scenario.stalled)].stalled


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
    kpis = [p for p in posts if "kpi" in p.event["data"]]
    assert kpis and {p.event["data"]["period"] for p in kpis} == {"2026-Q4"}
    assert scenario.silent not in {p.authority for p in posts}


def test_live_kpi_reports_use_each_kpis_frequency(catalogue: Catalogue) -> None:
    scenario = Scenario.for_catalogue(catalogue)
    story = LiveStory(catalogue, scenario, history(catalogue, scenario, NOW))
    now = datetime(2026, 5, 3, 9, 30, tzinfo=UTC)
    posts = [story.next(now + timedelta(seconds=i)) for i in range(1, 61)]
    kpis = [p for p in posts if "kpi" in p.event["data"]]
    assert {p.event["data"]["kpi"] for p in kpis} == {
        k.id for k in catalogue.kpis if k.id != scenario.lagging_kpi
    }
    for post in kpis:
        assert post.event["data"]["period"] == "2026-Q2"
        assert problems(catalogue, post, now + timedelta(minutes=2)) == []


def test_demo_tokens_are_revoked_when_the_demo_ends(tmp_path, catalogue: Catalogue) -> None:
    store = TokenStore.in_dir(tmp_path)
    with demo_tokens(store, ["np11", "nhsa"]) as tokens:
        assert store.authority_of(tokens["np11"]) == "np11"
    assert store.authority_of(tokens["np11"]) is None
    assert all(r.revoked_at for r in store.list())


def test_the_office_token_is_revoked_when_the_demo_ends(tmp_path) -> None:
    store = TokenStore.in_dir(tmp_path)
    with demo_office_token(store) as token:
        record = store.record_of(token)
        assert record is not None and record.is_office
        assert record.authority == "office/demo"
    assert store.record_of(token) is None


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
def test_demo_office_approves_returns_and_a_late_correction_is_locked(
    demo_stack: RunningStack,
) -> None:
    output = demo_stack.wait_for_output("A correction of the approved return", timeout=60)
    output = demo_stack.wait_for_output("refused 409", timeout=30)
    lines = output.splitlines()
    approved = next(line for line in lines if "office/demo approve rd-boost-gva" in line)
    assert "from np11: approved" in approved
    returned = next(line for line in lines if "office/demo return life-sciences-gva" in line)
    assert "from nhsa" in returned and "Please confirm the figure" in returned
    assert returned.rstrip().endswith("returned")
    refused = next(line for line in lines if "refused 409" in line)
    assert "np11 -> " in refused and "rd-boost-gva" in refused and "locked" in refused
    reporting = httpx.get(demo_stack.url + "/v1/reporting", timeout=5).json()
    silent = {(s["authority"], s["obligation"]) for s in reporting["silent"]}
    assert ("cumbria", "exports") in silent
    assert not {s for s in silent if s[1] == "3b"}
    queue = httpx.get(demo_stack.url + "/v1/reviews", timeout=5).json()
    assert queue["counts"]["returned"] >= 1


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
    # The return the office approved meanwhile is locked: not sent again, not a failure.
    assert tally.locked <= 1
    assert tally.duplicates + tally.locked == len(feed.past)
    assert tally.failures == []


@pytest.mark.slow
def test_the_demo_history_exports_to_valid_iati_and_a_gmpp_return(
    demo_stack: RunningStack,
) -> None:
    from lxml import etree
    from test_export_iati import iati_rule_violations, iati_schema

    demo_stack.wait_for_output("A correction of the approved return", timeout=60)
    answer = httpx.get(demo_stack.url + "/v1/exports/iati-activities.xml", timeout=30)
    assert answer.status_code == 200, answer.text
    iati_schema().assertValid(etree.fromstring(answer.content))
    assert iati_rule_violations(answer.content) == []
    # The demo approved rd-boost-gva's return: an approved value is an IATI actual.
    assert b"<actual " in answer.content
    quarter = "2026-Q3"
    gmpp = httpx.get(demo_stack.url + "/v1/exports/gmpp.json", params={"quarter": quarter})
    assert gmpp.status_code == 200, gmpp.text
    rows = gmpp.json()["rows"]
    assert {r["dca"] for r in rows} <= {"Red", "Amber", "Green"} and len(rows) == 7
