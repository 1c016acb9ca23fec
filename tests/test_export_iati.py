"""The IATI export is valid IATI 2.03, keeps the Standard's further rules, and says only what
the standing knows: approved KPI values, completed milestones, the mapping of docs/exports-iati.md.

``iati_schema`` and ``iati_rule_violations`` are for other tests to import: the first loads the
Standard's own schema from ``../shared/oracles/``, the second checks the rules that schema
does not (each a small function below, each violation naming its activity).
"""

from __future__ import annotations

import copy
import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from shared.catalogue import DEFAULT_CATALOGUE, Catalogue, Kpi, check_catalogue, load_catalogue
from shared.exports import PeriodResult, Standing
from shared.exports.iati import activity_identifier, iati_activities
from shared.health import KpiObservation, MilestoneState, ProgrammeState, kpi_expected
from shared.health import programme_health as rate
from shared.periods import period_end, period_of, period_start

ORACLE = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "iati-2.03"

Element = etree._Element
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


# --- the Standard: its schema, and the rules its schema does not check -----------------


@functools.cache
def iati_schema() -> etree.XMLSchema:
    """The IATI 2.03 activity schema, unchanged, from ``../shared/oracles/iati-2.03``."""
    return etree.XMLSchema(etree.parse(str(ORACLE / "iati-activities-schema.xsd")))


def assert_valid(document: bytes) -> None:
    """Valid against the schema and free of rule violations, or fail saying where."""
    schema = iati_schema()
    root = etree.fromstring(document)
    assert schema.validate(root), "\n".join(str(e) for e in schema.error_log)
    assert iati_rule_violations(document) == []


# Codes of the Standard's codelists (2.03) that the export may use, per attribute.
ORGANISATION_TYPES = {
    "10", "11", "15", "21", "22", "23", "24", "30", "40", "60", "70", "71", "72", "73", "80", "90",
}  # fmt: skip
CODELISTS: dict[str, set[str]] = {
    "activity-status/@code": {"1", "2", "3", "4", "5", "6"},
    "activity-date/@type": {"1", "2", "3", "4"},
    "description/@type": {"1", "2", "3", "4"},
    "participating-org/@role": {"1", "2", "3", "4"},
    "participating-org/@type": ORGANISATION_TYPES,
    "reporting-org/@type": ORGANISATION_TYPES,
    "result/@type": {"1", "2", "3", "9"},
    "result/indicator/@measure": {"1", "2", "3", "4", "5"},
}
QUANTITATIVE = {"1", "2"}  # IndicatorMeasure: unit, percentage
PLAIN_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
BAD_IN_IDENTIFIERS = re.compile(r"[\s/&|?]")


def iati_rule_violations(document: bytes) -> list[str]:
    """The IATI Standard's rules that its schema does not check, each violation as
    ``<iati-identifier>: <what>``; an empty list when the document keeps them all."""
    root = etree.fromstring(document)
    problems = file_rule_violations(root)
    for activity in root.iterfind("iati-activity"):
        where = activity.findtext("iati-identifier") or "(no iati-identifier)"
        for rule in ACTIVITY_RULES:
            problems += [f"{where}: {problem}" for problem in rule(activity, root)]
    return problems


def file_rule_violations(root: Element) -> list[str]:
    """One reporting organisation per file, identifiers unique, a generated time."""
    problems = []
    if _instant(root.get("generated-datetime")) is None:
        problems.append("iati-activities: generated-datetime is missing or not a time")
    refs = {a.get("ref") for a in root.iterfind("iati-activity/reporting-org")}
    if len(refs) > 1:
        problems.append(f"iati-activities: reporting-org/@ref differs between activities {refs}")
    identifiers = [i.text for i in root.iterfind("iati-activity/iati-identifier")]
    repeated = sorted({i for i in identifiers if identifiers.count(i) > 1 and i})
    problems += [f"iati-activities: iati-identifier {i} repeated" for i in repeated]
    return problems


def identifier_violations(activity: Element, root: Element) -> list[str]:
    """The identifier begins with the reporting organisation's ref and a hyphen; no
    identifier holds spaces or / & | ?."""
    problems = []
    identifier = activity.findtext("iati-identifier") or ""
    reporting = activity.find("reporting-org")
    ref = (reporting.get("ref") if reporting is not None else None) or ""
    if not ref or not identifier.startswith(f"{ref}-"):
        problems.append(f"iati-identifier does not begin with reporting-org/@ref {ref!r}")
    named = [("iati-identifier", identifier), ("reporting-org/@ref", ref)]
    named += [
        ("participating-org/@ref", o.get("ref", "")) for o in _all(activity, "participating-org")
    ]
    for what, value in named:
        if BAD_IN_IDENTIFIERS.search(value):
            problems.append(f"{what} {value!r} holds a forbidden character")
    return problems


def codelist_violations(activity: Element, root: Element) -> list[str]:
    """Every coded attribute holds a code of its codelist."""
    problems = []
    for path, codes in CODELISTS.items():
        element_path, attribute = path.rsplit("/@", 1)
        for element in activity.iterfind(element_path):
            code = element.get(attribute)
            if code is not None and code not in codes:
                problems.append(f"{path} {code!r} is not in its codelist")
    return problems


def narrative_violations(activity: Element, root: Element) -> list[str]:
    """Narratives have text and a language (the activity's default or their own); a
    participating organisation has a ref or a name."""
    problems = []
    default_language = activity.get(XML_LANG)
    for narrative in activity.iter("narrative"):
        if not (narrative.text or "").strip():
            problems.append(f"empty narrative in {narrative.getparent().tag}")
        if default_language is None and narrative.get(XML_LANG) is None:
            problems.append(f"narrative in {narrative.getparent().tag} has no language")
    for org in _all(activity, "participating-org"):
        if not org.get("ref") and org.find("narrative") is None:
            problems.append("participating-org has neither a ref nor a narrative")
    return problems


def sector_violations(activity: Element, root: Element) -> list[str]:
    """At least one sector; each vocabulary's percentages add up to 100; the reporting
    organisation's own vocabularies (98, 99) name their codes."""
    sectors = _all(activity, "sector")
    if not sectors:
        return ["no sector"]
    problems = []
    for vocabulary in sorted({s.get("vocabulary", "1") for s in sectors}):
        of = [s for s in sectors if s.get("vocabulary", "1") == vocabulary]
        percentages = [s.get("percentage") for s in of]
        if len(of) > 1 or any(p is not None for p in percentages):
            total = sum(float(p or "nan") for p in percentages)
            if abs(total - 100) > 1e-9:
                problems.append(f"sector percentages of vocabulary {vocabulary} add up to {total}")
        if vocabulary in {"98", "99"} and any(s.find("narrative") is None for s in of):
            problems.append(f"a sector of vocabulary {vocabulary} has no narrative")
    return problems


def iso_date_violations(activity: Element, root: Element) -> list[str]:
    """Every iso-date is a calendar date written YYYY-MM-DD."""
    return [
        f"{e.tag}/@iso-date {e.get('iso-date')!r} is not a YYYY-MM-DD date"
        for e in activity.iter()
        if e.get("iso-date") is not None and _date(e.get("iso-date")) is None
    ]


def activity_date_violations(activity: Element, root: Element) -> list[str]:
    """One date of each type at most, a start (planned or actual), starts before ends, no
    actual date after the file was generated, no actual end without an actual start."""
    problems = []
    dates: dict[str, date | None] = {}
    for element in _all(activity, "activity-date"):
        kind = element.get("type", "")
        if kind in dates:
            problems.append(f"activity-date of type {kind} repeated")
        dates[kind] = _date(element.get("iso-date"))
    if "1" not in dates and "2" not in dates:
        problems.append("no planned or actual start date")
    for start, end in (("1", "3"), ("2", "4")):
        s, e = dates.get(start), dates.get(end)
        if s is not None and e is not None and e < s:
            problems.append(f"activity-date type {end} ({e}) is before type {start} ({s})")
    if "4" in dates and "2" not in dates:
        problems.append("an actual end date without an actual start date")
    generated = _instant(root.get("generated-datetime"))
    for kind in ("2", "4"):
        day = dates.get(kind)
        if generated is not None and day is not None and day > generated.date():
            problems.append(f"actual date (type {kind}) {day} is after the file was generated")
    return problems


def status_violations(activity: Element, root: Element) -> list[str]:
    """The status agrees with the actual dates: an activity in the pipeline has none; one in
    implementation or later has started; a closed one has ended."""
    status_element = activity.find("activity-status")
    status = status_element.get("code") if status_element is not None else None
    types = {d.get("type") for d in _all(activity, "activity-date")}
    problems = []
    if status == "1" and types & {"2", "4"}:
        problems.append("activity-status 1 (pipeline) with an actual date")
    if status in {"2", "3", "4"} and "2" not in types:
        problems.append(f"activity-status {status} without an actual start date")
    if status == "4" and "4" not in types:
        problems.append("activity-status 4 (closed) without an actual end date")
    return problems


def time_violations(activity: Element, root: Element) -> list[str]:
    """The activity was last updated no later than the file was generated."""
    updated = activity.get("last-updated-datetime")
    if updated is None:
        return []
    at, generated = _instant(updated), _instant(root.get("generated-datetime"))
    if at is None:
        return [f"last-updated-datetime {updated!r} is not a time"]
    if generated is not None and at > generated:
        return [f"last-updated-datetime {updated} is after generated-datetime"]
    return []


def result_violations(activity: Element, root: Element) -> list[str]:
    """A quantitative indicator (measure 1 or 2) gives every baseline, target and actual a
    plain decimal value (no exponent, nan or infinity), a qualitative one (5) none; each
    period ends after it starts."""
    problems = []
    for number, indicator in enumerate(activity.iterfind("result/indicator"), 1):
        where = f"indicator {number}"
        measure = indicator.get("measure")
        valued = [*_all(indicator, "baseline"), *indicator.iterfind("period/target")]
        valued += indicator.iterfind("period/actual")
        for element in valued:
            value = element.get("value")
            if measure in QUANTITATIVE and (value is None or not PLAIN_DECIMAL.fullmatch(value)):
                problems.append(f"{where}: {element.tag}/@value {value!r} is not a plain decimal")
            if measure == "5" and value is not None:
                problems.append(f"{where}: qualitative {element.tag} has a value")
        for period in _all(indicator, "period"):
            start = _date(period.find("period-start").get("iso-date"))
            end = _date(period.find("period-end").get("iso-date"))
            if start is not None and end is not None and not start < end:
                problems.append(f"{where}: period ends ({end}) not after it starts ({start})")
    return problems


ActivityRule = Callable[[Element, Element], list[str]]
ACTIVITY_RULES: tuple[ActivityRule, ...] = (
    identifier_violations,
    codelist_violations,
    narrative_violations,
    sector_violations,
    iso_date_violations,
    activity_date_violations,
    status_violations,
    time_violations,
    result_violations,
)


def _all(element: Element, path: str) -> list[Element]:
    return list(element.iterfind(path))


def _date(text: str | None) -> date | None:
    if text is None or not ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- standings made by hand -------------------------------------------------------------

AS_AT = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
SHIPPED = load_catalogue()


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def periods_of(
    catalogue: Catalogue,
    kpi: Kpi,
    as_at: datetime,
    approved: Mapping[str, float] | None = None,
) -> tuple[PeriodResult, ...]:
    """Each period of the KPI's frequency from the programme's start to the last ended by
    ``as_at``, its target on the trajectory, and the ``approved`` actuals: each the first
    reporter's, approved 20 days after the period's end."""
    approved = approved or {}
    frequency = kpi.returns.frequency if kpi.returns else "quarterly"
    out = []
    period = period_of(catalogue.programme_start, frequency)
    while period_end(period) < as_at.date():
        start, end = period_start(period), period_end(period)
        target = kpi_expected(kpi, end)
        actual = approved.get(period)
        if actual is None:
            out.append(PeriodResult(period, start, end, target, None, None, None))
        else:
            approved_at = at((end + timedelta(days=20)).isoformat())
            out.append(
                PeriodResult(period, start, end, target, actual, kpi.reporters[0], approved_at)
            )
        period = period_of(end + timedelta(days=1), frequency)
    return tuple(out)


def standing(
    catalogue: Catalogue = SHIPPED,
    as_at: datetime = AS_AT,
    milestones: Mapping[tuple[str, str], tuple[str, datetime]] | None = None,
    observations: Iterable[KpiObservation] = (),
    approved: Mapping[str, Mapping[str, float]] | None = None,
    verified: Iterable[tuple[str, str]] = (),
) -> Standing:
    """A standing as the store would read it: the board's rating at ``as_at`` over the given
    milestone states and KPI reports, each KPI's periods with the ``approved`` actuals."""
    states = {
        key: MilestoneState(key[0], key[1], status, t, "urn:test", f"{key[0]}-{key[1]}-{status}")
        for key, (status, t) in (milestones or {}).items()
    }
    reports: dict[str, list[KpiObservation]] = {}
    for o in observations:
        reports.setdefault(o.kpi, []).append(o)
    state = ProgrammeState(milestones=states, kpi_observations=reports)
    approved = approved or {}
    return Standing(
        catalogue=catalogue,
        as_at=as_at,
        health=rate(catalogue, state, as_at),
        kpi_periods={
            k.id: periods_of(catalogue, k, as_at, approved.get(k.id)) for k in catalogue.kpis
        },
        verified=frozenset(verified),
        returns=(),
    )


def raw_shipped() -> dict[str, Any]:
    raw = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def catalogue_with(change: Callable[[dict[str, Any]], object]) -> Catalogue:
    """The shipped catalogue with ``change`` made to its YAML, validated afresh."""
    raw = copy.deepcopy(raw_shipped())
    change(raw)
    return Catalogue.model_validate(raw)


def parse(document: bytes) -> Element:
    return etree.fromstring(document)


def activity_of(root: Element, catalogue: Catalogue, proposal: str) -> Element:
    identifier = activity_identifier(catalogue, proposal)
    found = [
        a for a in root.iterfind("iati-activity") if a.findtext("iati-identifier") == identifier
    ]
    assert len(found) == 1, identifier
    return found[0]


def dates_of(activity: Element) -> dict[str, str]:
    return {d.get("type", ""): d.get("iso-date", "") for d in activity.iterfind("activity-date")}


def status_of(activity: Element) -> str:
    return activity.find("activity-status").get("code", "")


EVENTFUL = {
    ("1a", "joint-position"): ("completed", at("2025-06-20")),
    ("1a", "cluster-evidence"): ("completed", at("2025-11-10")),
    ("1a", "spending-review-case"): ("in_progress", at("2026-02-05")),
    ("2a", "campaign-launch"): ("blocked", at("2026-02-01")),
    ("3b", "network-terms"): ("not_started", at("2025-05-01")),
}
LIFE_SCIENCES_JOBS = "life-sciences-jobs"
APPROVED = {LIFE_SCIENCES_JOBS: {"2025-Q2": 56001.5, "2025-Q4": 57002.25}}
UNAPPROVED = [  # reported, on the board, never approved
    KpiObservation(LIFE_SCIENCES_JOBS, "2026-Q1", 99123.456, at("2026-04-10"), "urn:nhsa", "k1"),
    KpiObservation("exports", "2026-Q1", 131.987, at("2026-04-11"), "urn:np11", "k2"),
]


@pytest.fixture(scope="module")
def eventful() -> Standing:
    """Two completions in 1a (the first verified), one in progress, one blocked in 2a, an
    event in 3b that leaves its milestone not started; two approved KPI values and two
    reported but never approved."""
    for proposal, milestone in EVENTFUL:
        assert SHIPPED.proposal_by_id[proposal].milestone(milestone), (proposal, milestone)
    return standing(
        milestones=EVENTFUL,
        observations=UNAPPROVED,
        approved=APPROVED,
        verified=[("1a", "joint-position")],
    )


def all_completed() -> dict[tuple[str, str], tuple[str, datetime]]:
    """Every milestone completed on its due date (or the day before ``AS_AT``, if later)."""
    latest = AS_AT - timedelta(days=1)
    return {
        (p.id, m.id): ("completed", min(at(m.due.isoformat()), latest))
        for p in SHIPPED.proposals
        for m in p.milestones
    }


def everything_completed() -> Standing:
    milestones = all_completed()
    return standing(milestones=milestones, verified=list(milestones)[::2])


# --- valid IATI -------------------------------------------------------------------------


def test_the_shipped_catalogue_without_events_is_valid_iati() -> None:
    document = iati_activities(standing())
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<iati-activities ')
    assert_valid(document)
    root = parse(document)
    assert root.get("version") == "2.03"
    assert root.get("generated-datetime") == "2026-07-15T12:00:00Z"
    identifiers = [a.findtext("iati-identifier") for a in root.iterfind("iati-activity")]
    assert identifiers == [f"GB-COTN-DRAFT-{p.id}" for p in SHIPPED.proposals]
    for activity in root.iterfind("iati-activity"):
        assert activity.get(XML_LANG) == "en"
        assert activity.get("default-currency") == "GBP"
        assert activity.get("hierarchy") == "1"
        assert activity.get("last-updated-datetime") == "2026-07-15T12:00:00Z"
        assert activity.xpath("result/indicator/period/actual") == []


def test_a_programme_with_events_is_valid_iati(eventful: Standing) -> None:
    assert_valid(iati_activities(eventful))


def test_a_programme_with_everything_completed_is_valid_iati() -> None:
    document = iati_activities(everything_completed())
    assert_valid(document)
    assert {status_of(a) for a in parse(document).iterfind("iati-activity")} == {"3"}


def test_a_large_generated_programme_is_valid_iati() -> None:
    catalogue = large_catalogue(proposals=200, milestones=10, kpis=6)
    as_at = datetime(2027, 3, 1, tzinfo=UTC)
    milestones = {
        (p.id, m.id): (status, at("2025-09-01") + timedelta(days=i + j))
        for i, p in enumerate(catalogue.proposals)
        for j, (m, status) in enumerate(
            zip(p.milestones, ["completed", "in_progress", "blocked", "at_risk"], strict=False)
        )
    }
    approved = {
        k.id: {"2025-Q2": 10.5 + n, "2026-Q3": 20.25 + n} for n, k in enumerate(catalogue.kpis)
    }
    big = standing(catalogue, as_at, milestones, approved=approved, verified=list(milestones)[::3])
    started = time.perf_counter()
    document = iati_activities(big)
    built = time.perf_counter() - started
    assert_valid(document)
    root = parse(document)
    assert len(root.findall("iati-activity")) == 200
    assert len(root.findall("iati-activity/result[@type='1']")) == 2000
    assert built < 5, f"building took {built:.1f}s"


def large_catalogue(proposals: int, milestones: int, kpis: int) -> Catalogue:
    """A made-up programme of the given size over the shipped one's authorities."""
    raw = raw_shipped()
    authorities = [a["id"] for a in raw["authorities"]]
    ids = [f"p{n:03d}" for n in range(proposals)]
    start = date(2025, 3, 1)
    raw["columns"] = [
        {"id": f"column-{c}", "title": f"Column {c}", "proposals": ids[c::3]} for c in range(3)
    ]
    raw["proposals"] = [
        {
            "id": pid,
            "kind": "gamechanger" if n % 10 == 0 else "proposal",
            "title": f"Proposal {n} <of {proposals}> & more",
            "priority": None if n % 10 == 0 else n % 3 + 1,
            "text": f"What proposal {n} will do.",
            "annex_text": f"Annex wording {n}." if n % 2 else None,
            "partners": authorities[n % 5 : n % 5 + 4],
            "stall_threshold": "45d",
            "updates": {"by": [authorities[n % 5]], "frequency": "quarterly", "due_days": 14},
            "milestones": [
                {
                    "id": f"m{j}",
                    "title": f"Milestone {j} of {pid}",
                    "due": start + timedelta(days=60 * (j + 1)),
                }
                for j in range(milestones)
            ],
        }
        for n, pid in enumerate(ids)
    ]
    raw["kpis"] = [
        {
            "id": f"kpi-{k}",
            "title": f"Indicator {k}",
            "unit": "%" if k % 3 == 0 else "GBP m",
            "direction": "down" if k % 2 else "up",
            "baseline": {"value": 40.0 + k, "date": date(2024, 12, 31)},
            "target": {"value": 60.0 + k if k % 2 == 0 else 20.0 + k, "date": date(2030, 12, 31)},
            "shape": "linear",
            "evidences": ids[k::2],
            "reporters": authorities[:2],
            "returns": {"frequency": "quarterly", "due_days": 30},
            "source": f"Made up for a test ({k})",
        }
        for k in range(kpis)
    ]
    return Catalogue.model_validate(raw)


def test_the_schema_refuses_children_out_of_order(eventful: Standing) -> None:
    """The oracle is not vacuous: the schema's sequence is enforced."""
    root = parse(iati_activities(eventful))
    activity = root.find("iati-activity")
    activity.append(activity.find("title"))  # title after the results
    assert not iati_schema().validate(root)


BREAKAGES: list[tuple[str, str, Callable[[Element], object], str]] = [
    (
        "a target without a value",
        "1a",
        lambda a: a.find("result/indicator/period/target").attrib.pop("value"),
        "target/@value None is not a plain decimal",
    ),
    (
        "a value in exponent form",
        "1a",
        lambda a: a.find("result/indicator/baseline").set("value", "1e3"),
        "baseline/@value '1e3' is not a plain decimal",
    ),
    (
        "a period that ends before it starts",
        "1a",
        lambda a: a.find("result/indicator/period/period-end").set("iso-date", "2024-01-01"),
        "period ends (2024-01-01) not after it starts (2025-03-01)",
    ),
    (
        "an identifier of another organisation",
        "2a",
        lambda a: setattr(a.find("iati-identifier"), "text", "GB-OTHER-2a"),
        "iati-identifier does not begin with reporting-org/@ref 'GB-COTN-DRAFT'",
    ),
    (
        "an actual start in the pipeline",
        "3b",
        lambda a: a.find("activity-date").addnext(
            etree.Element("activity-date", {"type": "2", "iso-date": "2025-05-01"})
        ),
        "activity-status 1 (pipeline) with an actual date",
    ),
    (
        "an actual date after the file was made",
        "1a",
        lambda a: a.find("activity-date[@type='2']").set("iso-date", "2026-08-01"),
        "actual date (type 2) 2026-08-01 is after the file was generated",
    ),
    (
        "a code outside its codelist",
        "1a",
        lambda a: a.find("result").set("type", "7"),
        "result/@type '7' is not in its codelist",
    ),
    (
        "a date that is not a date",
        "1a",
        lambda a: a.find("activity-date").set("iso-date", "2025-02-30"),
        "activity-date/@iso-date '2025-02-30' is not a YYYY-MM-DD date",
    ),
    (
        "an update after the file was made",
        "1a",
        lambda a: a.set("last-updated-datetime", "2026-07-15T12:00:01Z"),
        "last-updated-datetime 2026-07-15T12:00:01Z is after generated-datetime",
    ),
]


@pytest.mark.parametrize(
    ("proposal", "breakage", "expected"),
    [pytest.param(p, b, e, id=name) for name, p, b, e in BREAKAGES],
)
def test_the_rules_find_each_breakage(
    eventful: Standing, proposal: str, breakage: Callable[[Element], object], expected: str
) -> None:
    root = parse(iati_activities(eventful))
    breakage(activity_of(root, SHIPPED, proposal))
    problems = iati_rule_violations(etree.tostring(root))
    assert any(expected in p for p in problems), problems


# --- only approved values, only completed milestones ------------------------------------


def test_an_unapproved_value_never_appears_as_an_actual(eventful: Standing) -> None:
    document = iati_activities(eventful)
    root = parse(document)
    actuals = {
        (r.findtext("title/narrative"), a.get("value"))
        for r in root.iterfind("iati-activity/result[@type='3']")
        for a in r.iterfind("indicator/period/actual")
    }
    title = SHIPPED.kpi_by_id[LIFE_SCIENCES_JOBS].title
    assert actuals == {(title, "56001.5"), (title, "57002.25")}
    # The board shows the unapproved reports; the export does not carry them anywhere.
    assert eventful.health.kpis[LIFE_SCIENCES_JOBS].actual == 99123.456
    for unapproved in UNAPPROVED:
        assert str(unapproved.value).encode() not in document


def test_kpi_periods_carry_the_trajectory_as_target_and_say_whose_return_is_approved(
    eventful: Standing,
) -> None:
    root = parse(iati_activities(eventful))
    kpi = SHIPPED.kpi_by_id[LIFE_SCIENCES_JOBS]
    results = [
        r
        for r in activity_of(root, SHIPPED, "1a").iterfind("result[@type='3']")
        if r.findtext("title/narrative") == kpi.title
    ]
    assert len(results) == 1
    result = results[0]
    assert result.get("aggregation-status") == "0"
    indicator = result.find("indicator")
    assert (indicator.get("measure"), indicator.get("ascending")) == ("1", "1")
    assert indicator.find("baseline").attrib == {
        "year": "2020",
        "iso-date": "2020-12-31",
        "value": "54100",
    }
    periods = indicator.findall("period")
    expected = eventful.kpi_periods[kpi.id]
    assert [p.find("period-start").get("iso-date") for p in periods] == [
        e.start.isoformat() for e in expected
    ]
    for period, e in zip(periods, expected, strict=True):
        assert float(period.find("target").get("value")) == pytest.approx(e.target, abs=1e-6)
    q2 = periods[[e.period for e in expected].index("2025-Q2")]
    assert q2.findtext("actual/comment/narrative") == (
        "Approved return of Northern Health Science Alliance (NHSA), approved on 2025-07-20."
    )


def test_every_kpi_that_evidences_a_proposal_is_a_result_of_it(eventful: Standing) -> None:
    root = parse(iati_activities(eventful))
    for proposal in SHIPPED.proposals:
        titles = [
            r.findtext("title/narrative")
            for r in activity_of(root, SHIPPED, proposal.id).iterfind("result[@type='3']")
        ]
        assert titles == [k.title for k in SHIPPED.kpis_evidencing.get(proposal.id, [])]


def test_a_milestone_has_an_actual_only_once_completed_saying_whether_verified(
    eventful: Standing,
) -> None:
    root = parse(iati_activities(eventful))
    outputs = activity_of(root, SHIPPED, "1a").findall("result[@type='1']")
    assert [r.findtext("title/narrative") for r in outputs] == [
        m.title for m in SHIPPED.proposal_by_id["1a"].milestones
    ]
    comments = [r.findtext("indicator/period/actual/comment/narrative") for r in outputs]
    assert comments == [
        "Completed on 2025-06-20; verified by the programme office.",
        "Completed on 2025-11-10, 10 days after its due date; not yet verified by the "
        "programme office.",
        None,
        None,
        None,
    ]
    first = outputs[0].find("indicator")
    assert first.find("baseline").attrib == {"year": "2025", "iso-date": "2025-03-01", "value": "0"}
    period = first.find("period")
    assert period.find("period-start").get("iso-date") == "2025-03-01"
    assert period.find("period-end").get("iso-date") == "2025-06-30"
    assert period.find("target").get("value") == "1"
    assert period.find("actual").get("value") == "1"


# --- status and dates -------------------------------------------------------------------


def test_no_milestone_moved_is_the_pipeline(eventful: Standing) -> None:
    root = parse(iati_activities(eventful))
    # 3b's only event left its milestone not started.
    activity = activity_of(root, SHIPPED, "3b")
    assert status_of(activity) == "1"
    assert dates_of(activity) == {"1": "2025-03-01", "3": "2027-11-30"}
    assert activity.get("last-updated-datetime") == "2025-05-01T10:00:00Z"


def test_a_moved_milestone_is_implementation_from_its_event(eventful: Standing) -> None:
    root = parse(iati_activities(eventful))
    one_a = activity_of(root, SHIPPED, "1a")
    assert status_of(one_a) == "2"
    assert dates_of(one_a) == {"1": "2025-03-01", "2": "2025-06-20", "3": "2027-06-30"}
    # Its newest event, later than the approvals of the KPI values it carries.
    assert one_a.get("last-updated-datetime") == "2026-02-05T10:00:00Z"
    two_a = activity_of(root, SHIPPED, "2a")
    assert (
        status_of(two_a) == "2"
    )  # blocked is still under way: the Standard's "suspended" is not ours to say
    assert dates_of(two_a)["2"] == "2026-02-01"


def test_every_milestone_completed_is_finalisation_ended_by_the_last() -> None:
    done = everything_completed()
    root = parse(iati_activities(done))
    for proposal in SHIPPED.proposals:
        activity = activity_of(root, SHIPPED, proposal.id)
        dues = [m.due for m in proposal.milestones]
        finished = [min(d, AS_AT.date() - timedelta(days=1)) for d in dues]
        assert status_of(activity) == "3"
        assert dates_of(activity) == {
            "1": "2025-03-01",
            "2": finished[0].isoformat(),
            "3": dues[-1].isoformat(),
            "4": max(finished).isoformat(),
        }


def test_one_milestone_left_keeps_it_in_implementation_without_an_actual_end() -> None:
    milestones = all_completed()
    milestones[("2b", "partner-forum")] = ("at_risk", at("2025-10-01"))
    document = iati_activities(standing(milestones=milestones))
    assert_valid(document)
    activity = activity_of(parse(document), SHIPPED, "2b")
    assert status_of(activity) == "2"
    assert "4" not in dates_of(activity)


def test_the_last_update_is_the_newest_approval_when_it_is_the_newest_thing() -> None:
    approvals = {"exports": {"2026-Q1": 130.5}}
    root = parse(iati_activities(standing(approved=approvals)))
    # exports evidences 3a only; approved 20 days after the quarter's end.
    assert activity_of(root, SHIPPED, "3a").get("last-updated-datetime") == "2026-04-20T10:00:00Z"
    assert activity_of(root, SHIPPED, "2b").get("last-updated-datetime") == "2026-07-15T12:00:00Z"


# --- who, what ---------------------------------------------------------------------------


def test_reporting_org_and_partners(eventful: Standing) -> None:
    root = parse(iati_activities(eventful))
    activity = activity_of(root, SHIPPED, "2b")
    reporting = activity.find("reporting-org")
    assert reporting.attrib == {"ref": "GB-COTN-DRAFT", "type": "90"}
    assert reporting.findtext("narrative") == "Convention of the North"
    orgs = [
        (o.get("role"), o.get("type"), o.get("ref"), o.findtext("narrative"))
        for o in activity.iterfind("participating-org")
    ]
    proposal = SHIPPED.proposal_by_id["2b"]
    assert proposal.updates is not None
    accountable = [o for o in orgs if o[0] == "2"]
    implementing = [o for o in orgs if o[0] == "4"]
    assert [o[3] for o in accountable] == [
        SHIPPED.authority_by_id[a].name for a in proposal.updates.by
    ]
    assert [o[3] for o in implementing] == [
        SHIPPED.authority_by_id[a].name for a in proposal.partners
    ]
    types = {o[3]: o[1] for o in orgs}
    assert types["Greater Manchester Combined Authority"] == "11"
    assert types["Lancashire Combined County Authority"] == "11"
    assert types["Northern Gritstone"] == "70"
    assert types["Northern universities"] == "80"
    assert all(o[2] is None for o in orgs), "no authority has a known IATI identifier yet"


def test_an_authority_ref_and_type_from_the_catalogue_are_used() -> None:
    def give_np11_a_ref(raw: dict[str, Any]) -> None:
        np11 = next(a for a in raw["authorities"] if a["id"] == "np11")
        np11.update(iati_ref="GB-COH-00000000", iati_type=90)

    catalogue = catalogue_with(give_np11_a_ref)
    root = parse(iati_activities(standing(catalogue)))
    np11 = [
        o.attrib
        for o in activity_of(root, catalogue, "3b").iterfind("participating-org")
        if o.findtext("narrative") == catalogue.authority_by_id["np11"].name
    ]
    assert np11 == [
        {"ref": "GB-COH-00000000", "type": "90", "role": "2"},
        {"ref": "GB-COH-00000000", "type": "90", "role": "4"},
    ]


def test_a_proposal_naming_no_partner_is_the_reporting_orgs_to_account_for() -> None:
    def alone(raw: dict[str, Any]) -> None:
        raw["proposals"][0].update(partners=[], updates=None)

    catalogue = catalogue_with(alone)
    document = iati_activities(standing(catalogue))
    assert_valid(document)
    orgs = activity_of(parse(document), catalogue, catalogue.proposals[0].id).findall(
        "participating-org"
    )
    assert [(o.attrib, o.findtext("narrative")) for o in orgs] == [
        ({"ref": "GB-COTN-DRAFT", "type": "90", "role": "2"}, "Convention of the North")
    ]


def test_title_descriptions_and_sector_are_the_papers(eventful: Standing) -> None:
    root = parse(iati_activities(eventful))
    for proposal in SHIPPED.proposals:
        activity = activity_of(root, SHIPPED, proposal.id)
        assert activity.findtext("title/narrative") == proposal.title
        descriptions = {
            d.get("type"): d.findtext("narrative") for d in activity.iterfind("description")
        }
        assert descriptions["1"] == proposal.text
        if proposal.annex_text and proposal.annex_text.split() != proposal.text.split():
            assert descriptions["4"] == proposal.annex_text
        else:
            assert "4" not in descriptions  # 3b's annex repeats its text word for word
        sector = activity.find("sector")
        assert sector.get("vocabulary") == "99"
        assert sector.get("vocabulary-uri") is None  # no published vocabulary to point to
        if proposal.priority is None:
            assert (sector.get("code"), sector.findtext("narrative")) == (
                "gamechanger",
                "Gamechanger proposition",
            )
        else:
            priority = next(p for p in SHIPPED.priorities if p.id == proposal.priority)
            assert sector.get("code") == str(priority.id)
            assert (
                sector.findtext("narrative") == f"Policy Priority {priority.id}: {priority.title}"
            )


def test_text_from_the_catalogue_is_escaped_and_round_trips() -> None:
    title = "R&D <b>bold</b> & \"quoted\" 'single' ]]> done"

    def rename(raw: dict[str, Any]) -> None:
        raw["proposals"][0]["title"] = title
        raw["proposals"][0]["text"] = "Line one\x01 with a control character & an ampersand"
        raw["proposals"][0]["milestones"][0]["title"] = "<milestone> & co"

    catalogue = catalogue_with(rename)
    document = iati_activities(standing(catalogue))
    assert_valid(document)
    activity = activity_of(parse(document), catalogue, catalogue.proposals[0].id)
    assert activity.findtext("title/narrative") == title
    assert (
        activity.findtext("description/narrative")
        == "Line one with a control character & an ampersand"
    )
    assert activity.findtext("result/title/narrative") == "<milestone> & co"
    assert b"<b>" not in document


def test_the_same_standing_gives_the_same_bytes(eventful: Standing) -> None:
    again = standing(
        milestones=EVENTFUL,
        observations=UNAPPROVED,
        approved=APPROVED,
        verified=[("1a", "joint-position")],
    )
    assert iati_activities(eventful) == iati_activities(eventful) == iati_activities(again)


def test_the_as_at_is_the_generated_time_in_utc() -> None:
    later = datetime(2026, 7, 15, 15, 30, 5, 250000, tzinfo=timezone(timedelta(hours=1)))
    root = parse(iati_activities(standing(as_at=later)))
    assert root.get("generated-datetime") == "2026-07-15T14:30:05.250000Z"


def test_a_naive_as_at_is_refused() -> None:
    naive = standing()
    naive = Standing(
        naive.catalogue,
        AS_AT.replace(tzinfo=None),
        naive.health,
        naive.kpi_periods,
        frozenset(),
        (),
    )
    with pytest.raises(ValueError, match="no time zone"):
        iati_activities(naive)


# --- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (54100.0, "54100"),
        (5.17, "5.17"),
        (0.1 + 0.2, "0.3"),
        (1e-7, "0"),
        (-1e-7, "0"),
        (123456.1234567, "123456.123457"),
        (1e20, "100000000000000000000"),
        (-2.5, "-2.5"),
    ],
)
def test_values_are_plain_decimals(value: float, text: str) -> None:
    base = standing()
    periods = dict(base.kpi_periods)
    first = periods["exports"][0]
    periods["exports"] = (
        PeriodResult(first.period, first.start, first.end, value, value, "np11", at("2025-07-20")),
        *periods["exports"][1:],
    )
    document = iati_activities(
        Standing(base.catalogue, base.as_at, base.health, periods, base.verified, ())
    )
    assert iati_rule_violations(document) == []
    period = activity_of(parse(document), SHIPPED, "3a").xpath(
        "result[@type='3'][title/narrative='Exports from the North']/indicator/period"
    )[0]
    assert (period.find("target").get("value"), period.find("actual").get("value")) == (text, text)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_value_that_is_not_a_number_is_refused_naming_the_kpi(value: float) -> None:
    base = standing()
    periods = dict(base.kpi_periods)
    first = periods["exports"][0]
    periods["exports"] = (
        PeriodResult(first.period, first.start, first.end, 1.0, value, "np11", at("2025-07-20")),
    )
    broken = Standing(base.catalogue, base.as_at, base.health, periods, base.verified, ())
    with pytest.raises(ValueError, match=r"kpis\[exports\]\[2025-Q1\]\.actual"):
        iati_activities(broken)


def test_a_unit_of_percent_is_measured_as_a_percentage() -> None:
    def percent(raw: dict[str, Any]) -> None:
        raw["kpis"][0]["unit"] = "% of firms"

    catalogue = catalogue_with(percent)
    root = parse(iati_activities(standing(catalogue)))
    measures = {
        r.findtext("title/narrative"): r.find("indicator").get("measure")
        for r in activity_of(root, catalogue, "1a").iterfind("result[@type='3']")
    }
    assert measures[catalogue.kpis[0].title] == "2"
    assert set(measures.values()) == {"1", "2"}


def test_a_downward_kpi_is_not_ascending() -> None:
    def down(raw: dict[str, Any]) -> None:
        raw["kpis"][5]["direction"] = "down"

    catalogue = catalogue_with(down)
    root = parse(iati_activities(standing(catalogue)))
    kpi = catalogue.kpis[5]
    indicator = activity_of(root, catalogue, kpi.evidences[0]).xpath(
        f"result[title/narrative='{kpi.title}']/indicator"
    )[0]
    assert indicator.get("ascending") == "0"


# --- the catalogue's IATI settings ------------------------------------------------------


def test_the_shipped_reporting_org_is_a_marked_draft() -> None:
    org = SHIPPED.iati.reporting_org
    assert org.draft
    assert "DRAFT" in org.ref
    assert not org.ref.startswith(("XM-DAC-", "XI-IATI-", "GB-GOV-", "GB-COH-"))
    assert SHIPPED.iati.identifier_prefix == org.ref


def test_a_catalogue_without_iati_settings_gets_the_draft() -> None:
    catalogue = catalogue_with(lambda raw: raw.pop("iati"))
    assert catalogue.iati.reporting_org.draft
    assert activity_identifier(catalogue, "1a") == "GB-COTN-DRAFT-1a"


def test_a_registered_identifier_and_prefix_are_used() -> None:
    def register(raw: dict[str, Any]) -> None:
        raw["iati"] = {
            "reporting_org": {
                "ref": "GB-COH-12345678",
                "type": 15,
                "name": "The office",
                "draft": False,
            },
            "activity_prefix": "GB-COH-12345678-INNOVATION",
            "sector_vocabulary_uri": "https://example.org/cotn/priorities",
        }

    catalogue = catalogue_with(register)
    document = iati_activities(standing(catalogue))
    assert_valid(document)
    activity = parse(document).find("iati-activity")
    assert activity.findtext("iati-identifier") == "GB-COH-12345678-INNOVATION-1a"
    assert activity.find("reporting-org").attrib == {"ref": "GB-COH-12345678", "type": "15"}
    assert activity.find("sector").get("vocabulary-uri") == "https://example.org/cotn/priorities"


IATI_BROKEN: list[tuple[str, Callable[[dict[str, Any]], object], list[str]]] = [
    (
        "prefix of another organisation",
        lambda r: r["iati"].update(activity_prefix="GB-COH-1"),
        [
            "iati.activity_prefix: 'GB-COH-1' does not begin with the reporting organisation's "
            "ref 'GB-COTN-DRAFT' (use 'GB-COTN-DRAFT' or 'GB-COTN-DRAFT-...')"
        ],
    ),
    (
        "prefix that runs into the ref",
        lambda r: r["iati"].update(activity_prefix="GB-COTN-DRAFTS"),
        [
            "iati.activity_prefix: 'GB-COTN-DRAFTS' does not begin with the reporting "
            "organisation's ref 'GB-COTN-DRAFT' (use 'GB-COTN-DRAFT' or 'GB-COTN-DRAFT-...')"
        ],
    ),
    (
        "prefix with a slash",
        lambda r: r["iati"].update(activity_prefix="GB-COTN-DRAFT/x"),
        [
            "iati.activity_prefix: 'GB-COTN-DRAFT/x' may not be empty or hold spaces or any "
            "of / & | ?"
        ],
    ),
    (
        "reporting org ref that is no identifier",
        lambda r: r["iati"]["reporting_org"].update(ref="COTN draft"),
        [
            "iati.reporting_org.ref: 'COTN draft' is not an IATI organisation identifier: "
            "{agency}-{number}, as in GB-COH-01234567, without spaces or any of / & | ?"
        ],
    ),
    (
        "reporting org type outside the codelist",
        lambda r: r["iati"]["reporting_org"].update(type=12),
        [
            "iati.reporting_org.type: Input should be 10, 11, 15, 21, 22, 23, 24, 30, 40, 60, "
            "70, 71, 72, 73, 80 or 90"
        ],
    ),
    (
        "authority type outside the codelist",
        lambda r: next(a for a in r["authorities"] if a["id"] == "nhsa").update(iati_type=99),
        [
            "authorities[nhsa].iati_type: Input should be 10, 11, 15, 21, 22, 23, 24, 30, 40, "
            "60, 70, 71, 72, 73, 80 or 90"
        ],
    ),
    (
        "authority ref with a space",
        lambda r: next(a for a in r["authorities"] if a["id"] == "nhsa").update(
            iati_ref="GB-COH 1"
        ),
        [
            "authorities[nhsa].iati_ref: 'GB-COH 1' is not an IATI organisation identifier: "
            "{agency}-{number}, as in GB-COH-01234567, without spaces or any of / & | ?"
        ],
    ),
    (
        "vocabulary uri that is no uri",
        lambda r: r["iati"].update(sector_vocabulary_uri="the paper"),
        ["iati.sector_vocabulary_uri: Input should be a valid URL, relative URL without a base"],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(mutate, expected, id=name) for name, mutate, expected in IATI_BROKEN],
)
def test_malformed_iati_settings_are_refused_by_place(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], expected: list[str]
) -> None:
    raw = copy.deepcopy(raw_shipped())
    mutate(raw)
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    catalogue, problems = check_catalogue(path)
    assert catalogue is None
    assert problems == expected
