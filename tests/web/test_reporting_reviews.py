"""The office's reporting and review pages in Debian's Chromium, against a real stack.

Each test posts returns and reviews through the real services (column services, ``POST
/v1/reviews`` with an office token), then checks what the office sees: completeness by
authority and period, silent reporters told apart from stalled proposals and overdue
milestones, an authority's late, missing and returned returns with the office's reason,
the review queue with links into the audit trail, verified completions and approved
actuals; axe-core on every page; screenshots to each test's output folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.web.browsing import axe_serious, mark_focusable, tab_through
from tests.web.conftest import Stack

pytestmark = pytest.mark.slow

AUTHORITY = "liverpool-city-region"
"""Owes progress updates on 3a and the exports KPI; no other test here reports for it."""
RETURN_REASON = "Exports exclude services: resend with <b>services</b> included"


def by_id(page: Any, element_id: str) -> Any:
    """An element by an id that holds dots (a return's target), which CSS would misread."""
    return page.locator(f"[id='{element_id}']")


def authority_doc(stack: Stack, authority: str = AUTHORITY) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(stack.running.url + f"/v1/reporting/{authority}").json()
    return doc


def missing_periods(stack: Stack, kind: str, obligation: str) -> list[str]:
    """The periods of ``obligation`` past due with nothing received, oldest first."""
    return sorted(
        o["period"]
        for o in authority_doc(stack)["missing"]
        if o["kind"] == kind and o["obligation"] == obligation
    )


def test_the_reporting_page_shows_completeness_and_the_silent_reporters(
    page: Any, stack: Stack, shots: Path
) -> None:
    # A late progress update on 3a (its newest due quarter): its exports return still missing.
    period = missing_periods(stack, "update", "3a")[-1]
    assert period in missing_periods(stack, "kpi", "exports")
    stack.post(
        "business",
        AUTHORITY,
        "update",
        {"proposal": "3a", "status": "no_change", "period": period, "note": "Nothing moved"},
    )
    page.goto(stack.office + "/")
    page.get_by_role("link", name="Reporting", exact=True).click()
    expect(page.locator("h1")).to_have_text("Reporting")
    # The three kinds of quiet are told apart on the page.
    quiet = page.locator("dl.quiet")
    for kind in ("Silent reporter", "Stalled proposal", "Overdue milestone"):
        expect(quiet).to_contain_text(kind)
    # Silent reporters come first: this authority owes its exports since the first miss.
    headings = page.locator("main h2").all_text_contents()
    assert headings[0].startswith("Silent reporters"), headings
    silences = {(s["kind"], s["obligation"]): s for s in authority_doc(stack)["silent"]}
    assert ("update", "3a") not in silences  # it sent the newest one, late
    silent = page.locator(f"#silent-{AUTHORITY}-kpi-exports")
    expect(silent).to_contain_text("KPI return: exports")
    expect(silent.locator(".date")).to_have_text(str(silences[("kpi", "exports")]["since"]))
    assert page.locator(f"#silent-{AUTHORITY}-update-3a").count() == 0
    # The grid: one row per authority, one column per period; a word beside the colour.
    cell = page.locator(f"#completeness-{AUTHORITY} td[data-period='{period}']")
    expect(cell.locator(".cell__ratio")).to_have_text("1/2")
    expect(cell.locator(".tag")).to_have_text("Missing")
    expect(cell.locator(".cell__counts")).to_contain_text("0 on time, 1 late, 1 missing")
    expect(page.locator("#completeness-table thead th", has_text=period)).to_have_count(1)
    page.screenshot(path=str(shots / "reporting.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)

    # The filters go to the aggregator; what it refuses is said on the page.
    page.goto(stack.office + f"/reporting?column=business&authority={AUTHORITY}&period={period}")
    expect(page.locator("#completeness-table tbody tr")).to_have_count(1)
    expect(page.locator("#completeness-table thead th")).to_have_count(2)
    expect(page.locator("#r-column")).to_have_value("business")
    refused = page.goto(stack.office + "/reporting?authority=atlantis")
    assert refused is not None and refused.status == 422
    expect(page.locator(".notice--error")).to_contain_text("atlantis")
    refused = page.goto(stack.office + "/reporting?colour=red")
    assert refused is not None and refused.status == 422
    expect(page.locator("main")).to_contain_text("colour")


def test_an_authority_page_shows_what_it_owes_and_what_was_returned(
    page: Any, stack: Stack, shots: Path
) -> None:
    periods = missing_periods(stack, "kpi", "exports")
    returned_period = periods[0]
    event_id = stack.post(
        "business", AUTHORITY, "kpi", {"kpi": "exports", "value": 20.5, "period": returned_period}
    )
    review = stack.review(
        action="return",
        kpi="exports",
        period=returned_period,
        reporter=AUTHORITY,
        reason=RETURN_REASON,
    )
    page.goto(stack.office + "/reporting")
    page.locator(f"#completeness-{AUTHORITY} th a").click()
    expect(page).to_have_url(re.compile(rf"/reporting/{AUTHORITY}$"))
    expect(page.locator("h1")).to_have_text(authority_doc(stack)["name"])
    # Returned for correction, with the office's reason as text (never markup).
    returned = page.locator("#returned-table tbody tr", has_text=f"exports {returned_period}")
    expect(returned.locator(".reason")).to_have_text(RETURN_REASON)
    expect(returned).to_contain_text(review["review"]["by"])
    # Late: what it sent after the due day; missing: the rest of the exports returns.
    expect(page.locator("#late-table tbody tr", has_text="KPI return: exports")).to_contain_text(
        returned_period
    )
    missing = page.locator("#missing-table tbody tr", has_text="KPI return: exports")
    expect(missing).to_have_count(len(periods) - 1)
    # What it owes next, with the due day, as the aggregator says.
    owed = authority_doc(stack)["next"]
    if owed:
        first = page.locator("#owed-next tbody tr").first
        expect(first.locator(".date")).to_have_text(str(owed[0]["due"]))
    else:
        expect(page.locator("#next + p")).to_contain_text("Nothing is owed")
    page.screenshot(path=str(shots / "authority.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)
    # The return's event link shows exactly that event in the audit trail.
    returned.get_by_role("link", name=event_id).click()
    expect(page.locator("td.id")).to_have_text(event_id)
    missing_page = page.goto(stack.office + "/reporting/atlantis")
    assert missing_page is not None and missing_page.status == 404


def test_the_reviews_page_shows_the_queue_with_links_to_the_audit_trail(
    page: Any, stack: Stack, shots: Path
) -> None:
    periods = missing_periods(stack, "kpi", "exports")
    waiting_period, returned_period = periods[-1], periods[-2]
    waiting_id = stack.post(
        "business", AUTHORITY, "kpi", {"kpi": "exports", "value": 31.0, "period": waiting_period}
    )
    stack.post(
        "business", AUTHORITY, "kpi", {"kpi": "exports", "value": 30.0, "period": returned_period}
    )
    review = stack.review(
        action="return",
        kpi="exports",
        period=returned_period,
        reporter=AUTHORITY,
        reason="Which quarter is this?",
    )
    page.goto(stack.office + "/")
    page.get_by_role("link", name="Reviews", exact=True).click()
    expect(page.locator("h1")).to_have_text("Reviews")
    expect(page.locator("#read-only")).to_contain_text("cotn review")
    expect(page.locator("#read-only")).to_contain_text("POST /v1/reviews")
    waiting = by_id(page, f"waiting-kpi.exports.{waiting_period}.{AUTHORITY}")
    expect(waiting).to_contain_text(f"exports {waiting_period}: 31")
    expect(waiting.locator(".tag")).to_have_text("Waiting")
    returned = by_id(page, f"returned-kpi.exports.{returned_period}.{AUTHORITY}")
    expect(returned.locator(".reason")).to_have_text("Which quarter is this?")
    expect(page.locator("#kept-aside")).to_be_visible()
    page.screenshot(path=str(shots / "reviews.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)
    # Each event links to its entry in the audit trail: the return, and the review itself.
    waiting.get_by_role("link", name=waiting_id).click()
    expect(page).to_have_url(re.compile(rf"/audit\?source={AUTHORITY}&id={waiting_id}$"))
    expect(page.locator("td.id")).to_have_text(waiting_id)
    page.go_back()
    returned.locator("a.review-link").click()
    expect(page.locator("td.id")).to_have_text(review["review"]["event"]["id"])
    # Filters pass through; what the aggregator refuses, the page says.
    page.goto(stack.office + "/reviews?kind=milestone")
    assert by_id(page, f"waiting-kpi.exports.{waiting_period}.{AUTHORITY}").count() == 0
    refused = page.goto(stack.office + "/reviews?kind=kpis")
    assert refused is not None and refused.status == 422
    refused = page.goto(stack.office + "/reviews?state=waiting")
    assert refused is not None and refused.status == 422


def test_verified_completions_and_approved_actuals_are_shown(
    page: Any, stack: Stack, shots: Path
) -> None:
    for milestone in ("institute-business-case", "institute-funding"):
        stack.post(
            "devolution",
            "greater-manchester",
            "milestone",
            {"proposal": "prevention", "milestone": milestone, "status": "completed"},
        )
    stack.review(action="verify", proposal="prevention", milestone="institute-business-case")
    period = missing_periods(stack, "kpi", "exports")[0]
    stack.post("business", AUTHORITY, "kpi", {"kpi": "exports", "value": 22.0, "period": period})
    stack.review(action="approve", kpi="exports", period=period, reporter=AUTHORITY)

    page.goto(stack.office + "/proposals/prevention")
    verified = page.locator("#milestone-institute-business-case .status .tag")
    expect(verified).to_have_text("Verified", timeout=20_000)
    unverified = page.locator("#milestone-institute-funding .status .tag")
    expect(unverified).to_have_text("Completed, unverified")
    expect(page.locator("#milestone-institute-established .status .tag")).to_have_text(
        "Not started"
    )
    page.screenshot(path=str(shots / "proposal-verified.png"), full_page=True)
    page.goto(stack.office + "/")
    expect(page.locator("#proposal-prevention .milestones")).to_have_text(
        "2 of 5 completed (1 verified, 1 unverified)"
    )
    page.goto(stack.office + "/kpis/exports")
    expect(page.locator(f"#period-{period} .approval")).to_have_text("Approved")
    page.screenshot(path=str(shots / "kpi-approved.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)


PAGES = {
    "reporting": "/reporting",
    "reporting-filtered": "/reporting?column=business",
    "authority": f"/reporting/{AUTHORITY}",
    "reviews": "/reviews",
}


@pytest.mark.parametrize("name", list(PAGES))
def test_the_new_pages_pass_axe_and_are_keyboard_reachable(
    page: Any, stack: Stack, shots: Path, name: str
) -> None:
    response = page.goto(stack.office + PAGES[name])
    assert response is not None and response.status == 200
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)
    wanted = mark_focusable(page)
    assert set(wanted) <= tab_through(page, wanted)
