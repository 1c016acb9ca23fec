"""What the browser tests share about a page as a person uses it: axe's serious findings,
and walking it with the Tab key."""

from __future__ import annotations

from typing import Any

from axe_playwright_python.sync_playwright import Axe

FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), "
    "select:not([disabled]), summary"
)


def axe_serious(page: Any) -> list[str]:
    """axe-core's serious and critical violations on ``page``, one line each."""
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def mark_focusable(page: Any, *, checked_radios_only: bool = False) -> list[str]:
    """Mark each visible focusable element (``data-focus-check``) and return the marks. Tab
    stops once in a group of radios, on the checked one: ``checked_radios_only`` counts
    only that one."""
    radios = ".filter(e => e.type !== 'radio' || e.checked)" if checked_radios_only else ""
    marks: list[str] = page.evaluate(
        f"""(selector) => Array.from(document.querySelectorAll(selector))
            .filter(e => e.offsetParent !== null || e.classList.contains('skip-link'))
            {radios}
            .map((e, i) => {{ e.dataset.focusCheck = String(i); return String(i); }})""",
        FOCUSABLE,
    )
    return marks


def tab_through(page: Any, wanted: list[str]) -> set[str]:
    """Press Tab until every mark in ``wanted`` has had the focus (or enough presses have
    gone by); the marks that had it."""
    reached: set[str] = set()
    for _ in range(len(wanted) + 20):  # a date input takes a Tab per part (day, month, year)
        page.keyboard.press("Tab")
        mark = page.evaluate("document.activeElement && document.activeElement.dataset.focusCheck")
        if mark is not None:
            reached.add(mark)
        if reached >= set(wanted):
            break
    return reached
