"""The two kinds the reporting work adds: a "no change" update and the office's review."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.catalogue import load_catalogue
from shared.kinds import KINDS
from shared.periods import coarser, period_of, within
from shared.reviews import Review, holding_review, review_state
from shared.validation import check_event

CATALOGUE = load_catalogue()
NOW = datetime(2026, 7, 10, 12, tzinfo=UTC)


def update(**data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "u1",
        "source": "greater-manchester",
        "type": "org.cotn.update.v1",
        "time": "2026-07-10T09:00:00Z",
        "data": {"proposal": "1a", "status": "no_change", **data},
    }


def problems(body: dict[str, Any], authority: str = "greater-manchester") -> list[str]:
    event, found = KINDS.problems(body)
    if event is None:
        return [f"{p.field}: {p.reason}" for p in found]
    found = check_event(
        event, catalogue=CATALOGUE, column="devolution", authority=authority, now=NOW
    )
    return [f"{p.field}: {p.reason}" for p in found]


def test_an_update_says_no_change_for_the_month_of_its_time_by_default() -> None:
    assert problems(update(note="nothing moved this month")) == []
    event = KINDS.parse(update())
    assert KINDS.of(event).row(event) == {"period": "2026-07"}


def test_an_update_is_refused_for_a_period_not_begun_or_from_a_non_partner() -> None:
    assert problems(update(period="2026-08"))[0].startswith("data.period: 2026-08 begins on")
    assert problems(update(), authority="nhsa") == [
        "source: is 'greater-manchester' but the token belongs to 'nhsa'",
        "data.proposal: 'nhsa' is not a partner of proposal 1a",
    ]
    assert problems(update(status="moved"))[0].startswith("data.status:")


def review(**data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "r1",
        "source": "office/jane",
        "type": "org.cotn.review.v1",
        "time": "2026-07-10T09:00:00Z",
        "data": data,
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"action": "approve", "kpi": "life-sciences-jobs", "period": "2025"}, "names one return"),
        (
            {"action": "verify", "kpi": "life-sciences-jobs", "period": "2025", "reporter": "nhsa"},
            "a KPI return is approved, returned or reopened",
        ),
        (
            {"action": "return", "proposal": "1a", "milestone": "joint-position"},
            "a reason is required",
        ),
    ],
)
def test_a_review_names_one_return_and_a_return_names_its_reason(
    data: dict[str, Any], reason: str
) -> None:
    event, found = KINDS.problems(review(**data))
    assert event is None
    assert reason in found[0].reason


def test_a_review_from_an_authority_is_refused() -> None:
    body = review(action="approve", kpi="life-sciences-jobs", period="2025", reporter="nhsa")
    event = KINDS.parse({**body, "source": "nhsa"})
    found = KINDS.of(event).check(event, catalogue=CATALOGUE, column="devolution", authority=None)
    assert [(p.field, p.status) for p in found] == [("source", 403)]


def r(action: str, seq: int) -> Review:
    return Review("kpi.k.2025.a", action, seq, "office/jane", f"r{seq}", NOW)


def test_a_lock_holds_by_stream_order_until_a_reopen() -> None:
    reviews = [r("approve", 5), r("reopen", 9), r("approve", 12)]
    assert holding_review(reviews, 4) is None
    assert holding_review(reviews, 6) == reviews[0]
    assert holding_review(reviews, 10) is None
    assert holding_review(reviews, 13) == reviews[2]


def test_a_return_is_submitted_approved_returned_and_submitted_again() -> None:
    assert review_state(None, []) == (None, None)
    assert review_state(3, [])[0] == "submitted"
    assert review_state(3, [r("approve", 5)])[0] == "approved"
    assert review_state(3, [r("return", 5)])[0] == "returned"
    assert review_state(7, [r("return", 5)])[0] == "submitted"  # resubmitted after the return
    assert review_state(3, [r("approve", 5), r("reopen", 6)])[0] == "submitted"


def test_periods_of_a_frequency() -> None:
    assert period_of(datetime(2026, 8, 3).date(), "quarterly") == "2026-Q3"
    assert within("2026-08", "quarterly") == "2026-Q3"
    assert within("2026", "quarterly") is None
    assert coarser("2026-Q3", "monthly") and not coarser("2026-Q3", "annual")
