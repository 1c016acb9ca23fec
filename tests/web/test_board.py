"""The office web board in Debian's Chromium, against a real stack fed over HTTP.

Each test posts what it needs to the column services, then checks in the browser what the
programme office would see: tags and reasons, live updates, escaped notes, the KPI chart,
axe-core, keyboard reach; screenshots go to each test's output folder.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from services.office.views import day_label
from tests.web.browsing import axe_serious, mark_focusable, tab_through
from tests.web.conftest import Stack

pytestmark = pytest.mark.slow

SCRIPT_NOTE = '<script>window.__injected = 1</script><b id="bold">not bold</b> & "quoted"'
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date()
# Live: connected, or already updated by a change another test made on the shared stack.
LIVE = re.compile(r"^(Live updates on|Updated at .+)\.$")


def test_board_shows_the_events_with_their_tags_and_first_reason(page: Any, stack: Stack) -> None:
    stack.post(
        "devolution",
        "greater-manchester",
        "milestone",
        {"proposal": "1a", "milestone": "joint-position", "status": "blocked", "note": "held"},
    )
    page.goto(stack.office + "/")
    row = page.locator("#proposal-1a")
    expect(row.locator(".tag").first).to_have_text("Red")
    expect(row).to_contain_text("Milestone blocked: ")
    # Nobody has reported 3b: its overdue milestones make it red, and it says no reports.
    expect(page.locator("#proposal-3b .tag").nth(1)).to_have_text("No reports")
    expect(page.locator(".summary")).to_contain_text("Red")
    expect(page.get_by_text("Last updated: newest report")).to_be_visible()
    # A column's own page: its proposals only, reached from its heading.
    page.locator("#column-devolution a").click()
    expect(page.locator("h1")).to_have_text("Greater devolution to Northern Places")
    expect(page.locator("#proposal-1a .tag").first).to_have_text("Red")
    assert page.locator("#proposal-2a").count() == 0


def test_a_note_with_script_is_shown_as_text(page: Any, stack: Stack) -> None:
    stack.post(
        "devolution",
        "greater-manchester",
        "milestone",
        {
            "proposal": "1a",
            "milestone": "cluster-evidence",
            "status": "in_progress",
            "note": SCRIPT_NOTE,
        },
    )
    page.goto(stack.office + "/proposals/1a")
    note = page.locator("#milestone-cluster-evidence .note")
    expect(note).to_have_text(SCRIPT_NOTE)
    assert page.evaluate("window.__injected") is None
    assert page.locator("#bold").count() == 0
    page.goto(stack.office + "/audit?proposal=1a")
    expect(page.locator("td.note", has_text="window.__injected")).to_have_text(SCRIPT_NOTE)
    assert page.evaluate("window.__injected") is None


def test_the_live_update_arrives_without_a_reload(page: Any, stack: Stack) -> None:
    page.goto(stack.office + "/")
    expect(page.locator("#live-status")).to_have_text(LIVE)
    page.evaluate("window.__sameDocument = true")
    last = page.locator("#proposal-2b .last-progress")
    expect(last).to_have_text("No reports yet")
    # A keyboard user on 2b's link keeps their place through the update.
    page.locator("#proposal-2b a").first.focus()
    stack.post(
        "collaboration",
        "northern-gritstone",
        "milestone",
        {"proposal": "2b", "milestone": "finance-gap-analysis", "status": "blocked"},
    )
    expect(last).to_contain_text("UTC", timeout=20_000)
    expect(page.locator("#proposal-2b")).to_contain_text("Milestone blocked")
    expect(page.locator("#live-status")).to_contain_text("Updated at")
    assert page.evaluate("window.__sameDocument") is True
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/proposals/2b"


def test_the_proposal_page_updates_live_too(page: Any, stack: Stack) -> None:
    page.goto(stack.office + "/proposals/3b")
    expect(page.locator("#live-status")).to_have_text(LIVE)
    page.evaluate("window.__sameDocument = true")
    row = page.locator("#milestone-network-terms")
    expect(row.locator(".tag", has_text="Not started")).to_be_visible()
    stack.post(
        "business",
        "np11",
        "milestone",
        {"proposal": "3b", "milestone": "network-terms", "status": "completed", "note": "Agreed"},
    )
    expect(row.locator(".tag", has_text="Completed")).to_be_visible(timeout=20_000)
    expect(row.locator(".note")).to_have_text("Agreed")
    assert page.evaluate("window.__sameDocument") is True


def test_a_red_proposal_leads_to_the_events_that_made_it_red(page: Any, stack: Stack) -> None:
    event_id = stack.post(
        "business",
        "greater-manchester",
        "milestone",
        {"proposal": "3a", "milestone": "government-support", "status": "blocked"},
    )
    page.goto(stack.office + "/")
    page.locator("#proposal-3a a").click()
    expect(page.locator("h1")).to_contain_text("3a")
    reason = page.locator(".reasons li", has_text="Milestone blocked")
    expect(reason).to_contain_text("(since ")
    # The reason names its event: the link shows exactly that event in the audit trail.
    reason.locator("a.event-link", has_text=event_id).click()
    expect(page).to_have_url(re.compile(rf"/audit\?source=greater-manchester&id={event_id}$"))
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("td.id")).to_have_text(event_id)
    expect(page.locator("#f-id")).to_have_value(event_id)
    # And every event about the milestone, by the milestone filter.
    page.go_back()
    reason.get_by_role("link", name="every event about government-support").click()
    expect(page).to_have_url(re.compile(r"/audit\?proposal=3a&milestone=government-support$"))
    expect(page.locator("td.id", has_text=event_id)).to_be_visible()


def test_the_proposal_page_shows_its_history_and_dependencies(page: Any, stack: Stack) -> None:
    event_id = stack.post(
        "devolution",
        "greater-manchester",
        "milestone",
        {"proposal": "1a", "milestone": "joint-position", "status": "completed"},
    )
    page.goto(stack.office + "/proposals/1a")
    # Due and forecast dates; what a milestone follows, with its lag.
    row = page.locator("#milestone-cluster-evidence")
    expect(row.locator(".follows")).to_contain_text("3b/network-terms (30 days, draft)")
    expect(row.locator(".forecast")).not_to_be_empty()
    expect(page.locator("thead", has_text="Forecast").first).to_be_visible()
    # The history timeline, newest first: the event's change links to that event.
    history = page.locator("#history table")
    expect(history).to_be_visible()
    entry = history.locator("tbody tr", has_text=event_id).first
    expect(entry).to_be_visible()
    expect(history.locator("tbody tr", has_text="The clock").first).to_be_visible()
    entry.get_by_role("link", name=re.compile(event_id)).click()
    expect(page.locator("td.id")).to_have_text(event_id)


def test_the_as_at_picker_shows_a_past_board_with_its_banner(page: Any, stack: Stack) -> None:
    stack.post(
        "devolution",
        "greater-manchester",
        "milestone",
        {"proposal": "1a", "milestone": "joint-position", "status": "in_progress"},
    )
    page.goto(stack.office + "/")
    expect(page.locator("#proposal-1a .last-progress")).to_contain_text("UTC")
    page.fill("#as-at", YESTERDAY.isoformat())
    page.get_by_role("button", name="Show this date").click()
    expect(page).to_have_url(re.compile(rf"/\?as_at={YESTERDAY.isoformat()}&known_at=$"))
    banner = page.locator("#as-at-banner")
    expect(banner).to_contain_text(f"As at {day_label(YESTERDAY)}, as now known")
    # Yesterday nobody had reported on 1a; a past view is not live.
    expect(page.locator("#proposal-1a .last-progress")).to_have_text("No reports yet")
    assert page.locator("[data-live]").count() == 0 and page.locator("#live-status").count() == 0
    expect(page.locator("#as-at")).to_have_value(YESTERDAY.isoformat())
    # Its links keep the view: the proposal as at the same date, with the same banner.
    page.locator("#proposal-1a a").click()
    expect(page).to_have_url(re.compile(rf"/proposals/1a\?as_at={YESTERDAY.isoformat()}"))
    expect(page.locator("#as-at-banner")).to_contain_text(f"As at {day_label(YESTERDAY)}")
    expect(page.locator("#milestone-joint-position .tag", has_text="Not started")).to_be_visible()
    page.get_by_role("link", name="Back to the live board").click()
    expect(page).to_have_url(re.compile(r"/proposals/1a$"))
    assert page.locator("#as-at-banner").count() == 0
    expect(page.locator("#live-status")).to_have_text(LIVE)
    # Both dates: the board as it was shown then.
    page.goto(stack.office + f"/?as_at={YESTERDAY.isoformat()}&known_at={YESTERDAY.isoformat()}")
    expect(page.locator("#as-at-banner")).to_contain_text(
        f"As at {day_label(YESTERDAY)}, as it was shown on {day_label(YESTERDAY)}"
    )


def test_the_kpi_chart_has_its_points_and_a_table(page: Any, stack: Stack) -> None:
    for period, value in (
        ("2025-Q1", 155.0),
        ("2025-Q2", 170.0),
        ("2025-Q3", 181.5),
        ("2025-Q1", 156.0),  # a correction
    ):
        stack.post(
            "collaboration",
            "northern-gritstone",
            "kpi",
            {"kpi": "early-stage-finance", "value": value, "period": period},
        )
    page.goto(stack.office + "/kpis/early-stage-finance")
    chart = page.locator("figure.chart svg[role=img]")
    expect(chart).to_be_visible()
    assert "Early-stage finance" in chart.locator("title").first.text_content()
    description = chart.locator("desc#chart-desc-early-stage-finance").text_content()
    assert "2025-Q3: 181.5 GBP m" in description and "2025-Q1: 156 GBP m" in description
    # The actual series (the first) has one dot per reported period.
    expect(chart.locator(".plot .series.serie-0 .dot")).to_have_count(3)
    # Each year once on the x-axis.
    years = chart.locator(".axis.x text").all_text_contents()
    assert years == sorted(set(years)) and "2026" in years, years
    expect(page.locator("table")).to_contain_text("181.5 GBP m")
    q1 = page.locator("#period-2025-Q1")
    expect(q1).to_contain_text("by northern-gritstone")
    expect(q1.locator(".corrections")).to_contain_text("replaced 155 GBP m")
    assert page.evaluate("document.querySelectorAll('script[src^=http]').length") == 0


PAGES = {
    "programme": "/",
    "column": "/columns/devolution",
    "proposal": "/proposals/1a",
    "kpis": "/kpis",
    "kpi": "/kpis/early-stage-finance",
    "audit": "/audit",
    "login": "/login",
    "programme-as-at": f"/?as_at={YESTERDAY.isoformat()}",
    "proposal-as-at": f"/proposals/1a?as_at={YESTERDAY.isoformat()}&known_at={YESTERDAY}",
    "kpis-as-at": f"/kpis?as_at={YESTERDAY.isoformat()}",
    "kpi-as-at": f"/kpis/early-stage-finance?as_at={YESTERDAY.isoformat()}",
}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_passes_axe_and_is_keyboard_reachable(
    page: Any, stack: Stack, shots: Path, name: str
) -> None:
    if stack.posted == 0:  # something on the board, when run alone
        stack.post(
            "devolution",
            "greater-manchester",
            "milestone",
            {"proposal": "1a", "milestone": "joint-position", "status": "at_risk"},
        )
    # Held still: a live update re-renders the board, and the walk below marks its elements
    # first (live updates have tests of their own).
    page.route("**/live/**", lambda route: route.abort())
    response = page.goto(stack.office + PAGES[name])
    assert response.status == 200
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    assert not (bad := axe_serious(page)), "\n".join(bad)

    wanted = mark_focusable(page)
    missed = set(wanted) - tab_through(page, wanted)
    assert not missed, page.evaluate(
        "(ids) => ids.map(i => document.querySelector(`[data-focus-check='${i}']`).outerHTML)",
        sorted(missed),
    )


def test_the_pages_work_without_javascript(browser: Any, stack: Stack) -> None:
    stack.post(
        "devolution",
        "greater-manchester",
        "milestone",
        {"proposal": "1a", "milestone": "spending-review-case", "status": "in_progress"},
    )
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(stack.office + "/")
        expect(page.locator("#proposal-1a .tag").first).to_be_visible()
        expect(page.locator("#live-status")).to_have_text("")  # no live updates, no error
        page.goto(stack.office + "/audit")
        page.select_option("#f-proposal", "1a")
        page.select_option("#f-type", "org.cotn.milestone.v1")
        page.get_by_role("button", name="Apply filters").click()
        expect(page).to_have_url(re.compile(r"/audit\?proposal=1a&source=&type=org\.cotn"))
        expect(page.locator("tbody tr").first).to_contain_text("greater-manchester")
        assert page.locator("tbody td:nth-child(5)", has_text="3a").count() == 0
    finally:
        context.close()
