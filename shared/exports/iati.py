"""IATI Standard 2.03 activities from a standing (pure): the programme as funders read it.

:func:`iati_activities` writes one ``iati-activity`` per proposal and gamechanger, in
catalogue order: who reports it and who delivers it, its status and dates from its
milestones, each milestone as an output result and each KPI that evidences it as an impact
result whose periods carry the trajectory's value as target and, only once approved, the
approved value as actual. How each element is derived, and what is left out, is in
``docs/exports-iati.md``.

The document is a function of the standing alone: no clock is read, so the same standing
gives the same bytes. It is built with the standard library's ElementTree, which escapes
text; the project's tests hold it against the Standard's own schema.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from xml.etree.ElementTree import Element, SubElement, indent, tostring

from shared.catalogue import Authority, Catalogue, Kpi, Milestone, Proposal
from shared.exports import PeriodResult, Standing
from shared.health import MilestoneHealth, ProposalHealth

IATI_VERSION = "2.03"
LANGUAGE = "en"
CURRENCY = "GBP"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Codes of the Standard's codelists, by the names the codelists give them.
DESCRIPTION_GENERAL, DESCRIPTION_OTHER = "1", "4"  # DescriptionType
ROLE_ACCOUNTABLE, ROLE_IMPLEMENTING = "2", "4"  # OrganisationRole
ORGANISATION_LOCAL_GOVERNMENT = 11  # OrganisationType
STATUS_PIPELINE, STATUS_IMPLEMENTATION, STATUS_FINALISATION = "1", "2", "3"  # ActivityStatus
PLANNED_START, ACTUAL_START, PLANNED_END, ACTUAL_END = "1", "2", "3", "4"  # ActivityDateType
RESULT_OUTPUT, RESULT_IMPACT = "1", "3"  # ResultType
MEASURE_UNIT, MEASURE_PERCENTAGE = "1", "2"  # IndicatorMeasure
VOCABULARY_REPORTING_ORG = "99"  # SectorVocabulary: the reporting organisation's own

KPI_RESULT_TYPE = RESULT_IMPACT
"""The KPIs are the North's economy over decades (jobs, GVA, exports by 2040 or 2050), to
which a proposal contributes but which it does not produce alone: impacts, not outcomes."""

HIERARCHY = "1"
"""Every activity is at the top level: the export has no programme-level parent activity."""

GAMECHANGER_SECTOR = "gamechanger"
"""The sector code of a gamechanger, which the paper places beside, not under, its priorities."""

# Characters XML 1.0 cannot carry at all, even escaped: dropped from catalogue text.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_PERCENT = re.compile(r"%|\bper ?cent(age)?\b", re.IGNORECASE)


def iati_activities(standing: Standing) -> bytes:
    """The programme as at ``standing.as_at`` as an IATI 2.03 ``iati-activities`` document:
    UTF-8 XML with its declaration, one activity per proposal and gamechanger.

    Raises ValueError for an ``as_at`` or event time without a time zone, and for a KPI value
    that is not a finite number (naming the KPI and period): neither can be written honestly.
    """
    root = Element(
        "iati-activities",
        {"version": IATI_VERSION, "generated-datetime": _instant(standing.as_at)},
    )
    # Lists, not generators: ElementTree's extend would hide an error raised while building.
    root.extend([_activity(standing, proposal) for proposal in standing.catalogue.proposals])
    indent(root)
    return XML_DECLARATION + tostring(root, encoding="utf-8")


def activity_identifier(catalogue: Catalogue, proposal_id: str) -> str:
    """The proposal's ``iati-identifier``: the catalogue's prefix (the reporting
    organisation's ref, or one beginning with it), a hyphen, the proposal's id."""
    return f"{catalogue.iati.identifier_prefix}-{proposal_id}"


def _activity(standing: Standing, proposal: Proposal) -> Element:
    """One ``iati-activity``; its children in the order the schema's sequence requires."""
    catalogue = standing.catalogue
    health = standing.health.proposals[proposal.id]
    activity = Element(
        "iati-activity",
        {
            "last-updated-datetime": _instant(_last_updated(standing, proposal, health)),
            XML_LANG: LANGUAGE,
            "default-currency": CURRENCY,
            "hierarchy": HIERARCHY,
        },
    )
    SubElement(activity, "iati-identifier").text = activity_identifier(catalogue, proposal.id)
    activity.append(_reporting_org(catalogue))
    activity.append(_narrated("title", proposal.title))
    activity.extend(_descriptions(proposal))
    activity.extend(_participating_orgs(catalogue, proposal))
    SubElement(activity, "activity-status", {"code": _status(health)})
    activity.extend(_activity_dates(catalogue, proposal, health))
    activity.append(_sector(catalogue, proposal))
    activity.extend(_milestone_results(standing, proposal, health))
    activity.extend(
        [_kpi_result(standing, kpi) for kpi in catalogue.kpis_evidencing.get(proposal.id, ())]
    )
    return activity


def _last_updated(standing: Standing, proposal: Proposal, health: ProposalHealth) -> datetime:
    """The newest time of anything the activity shows: its milestones' newest events and the
    approvals of the KPI values it carries; ``as_at`` when there is none."""
    times = [m.updated_at for m in health.milestones if m.updated_at is not None]
    for kpi in standing.catalogue.kpis_evidencing.get(proposal.id, ()):
        times += [
            p.approved_at
            for p in standing.kpi_periods.get(kpi.id, ())
            if p.actual is not None and p.approved_at is not None
        ]
    return max(times, default=standing.as_at)


# --- who: the reporting organisation and the partners ------------------------------------


def _reporting_org(catalogue: Catalogue) -> Element:
    org = catalogue.iati.reporting_org
    return _narrated("reporting-org", org.name, {"ref": org.ref, "type": str(org.type)})


def _participating_orgs(catalogue: Catalogue, proposal: Proposal) -> list[Element]:
    """Those who owe its progress updates as accountable, then every partner as implementing
    (an organisation in both roles appears once per role, as the Standard asks)."""
    accountable = proposal.updates.by if proposal.updates is not None else []
    roles = [(a, ROLE_ACCOUNTABLE) for a in dict.fromkeys(accountable)]
    roles += [(a, ROLE_IMPLEMENTING) for a in dict.fromkeys(proposal.partners)]
    orgs = [_participant(catalogue.authority_by_id[a], role) for a, role in roles]
    if not orgs:
        # The schema wants at least one: a proposal naming no partner is the office's alone.
        org = catalogue.iati.reporting_org
        orgs.append(
            _narrated(
                "participating-org",
                org.name,
                {"ref": org.ref, "type": str(org.type), "role": ROLE_ACCOUNTABLE},
            )
        )
    return orgs


def _participant(authority: Authority, role: str) -> Element:
    attributes = {}
    if authority.iati_ref is not None:
        attributes["ref"] = authority.iati_ref
    kind_type = ORGANISATION_LOCAL_GOVERNMENT if authority.kind != "body" else None
    org_type = authority.iati_type if authority.iati_type is not None else kind_type
    if org_type is not None:
        attributes["type"] = str(org_type)
    attributes["role"] = role
    return _narrated("participating-org", authority.name, attributes)


# --- what: title, descriptions, classification ------------------------------------------


def _descriptions(proposal: Proposal) -> list[Element]:
    """The paper's full text as the general description; its annex wording, where the annex
    words it differently, as another."""
    out = [_narrated("description", proposal.text, {"type": DESCRIPTION_GENERAL})]
    annex = proposal.annex_text
    if annex and " ".join(annex.split()) != " ".join(proposal.text.split()):
        out.append(_narrated("description", annex, {"type": DESCRIPTION_OTHER}))
    return out


def _sector(catalogue: Catalogue, proposal: Proposal) -> Element:
    """The paper's policy priority (or "gamechanger") in the reporting organisation's own
    vocabulary: the Standard's rulesets want a sector, and this is the purpose the paper
    gives; a single code per vocabulary takes 100 percent."""
    if proposal.priority is not None:
        priority = next(p for p in catalogue.priorities if p.id == proposal.priority)
        code, name = str(priority.id), f"Policy Priority {priority.id}: {priority.title}"
    else:
        code, name = GAMECHANGER_SECTOR, "Gamechanger proposition"
    attributes = {"vocabulary": VOCABULARY_REPORTING_ORG}
    uri = catalogue.iati.sector_vocabulary_uri
    if uri is not None:
        attributes["vocabulary-uri"] = str(uri)
    attributes |= {"code": code, "percentage": "100"}
    return _narrated("sector", name, attributes)


# --- when: status and dates from the milestones -----------------------------------------


def _status(health: ProposalHealth) -> str:
    """Pipeline until a milestone has moved, finalisation once all are completed (never
    closed: the monitor knows nothing of financial sign-off), implementation between."""
    statuses = {m.status for m in health.milestones}
    if statuses == {"completed"}:
        return STATUS_FINALISATION
    if statuses == {"not_started"}:
        return STATUS_PIPELINE
    return STATUS_IMPLEMENTATION


def _activity_dates(
    catalogue: Catalogue, proposal: Proposal, health: ProposalHealth
) -> list[Element]:
    """Planned start (the programme's), actual start (the earliest moved milestone's newest
    event, all the standing knows of it), planned end (the last due date) and actual end
    (the last completion, once every milestone is completed)."""
    out = [_activity_date(PLANNED_START, catalogue.programme_start)]
    moved = [m.updated_at for m in health.milestones if m.status != "not_started" and m.updated_at]
    if moved:
        out.append(_activity_date(ACTUAL_START, _day(min(moved))))
    draft = "A draft date, for the programme office to confirm" if proposal.dates_are_draft else ""
    out.append(_activity_date(PLANNED_END, max(m.due for m in proposal.milestones), draft))
    done = [m.updated_at for m in health.milestones if m.status == "completed" and m.updated_at]
    if len(done) == len(health.milestones):
        out.append(_activity_date(ACTUAL_END, _day(max(done))))
    return out


def _activity_date(date_type: str, day: date, note: str = "") -> Element:
    element = Element("activity-date", {"type": date_type, "iso-date": day.isoformat()})
    if note:
        SubElement(element, "narrative").text = note
    return element


# --- results: milestones as outputs, KPIs as impacts -------------------------------------


def _milestone_results(
    standing: Standing, proposal: Proposal, health: ProposalHealth
) -> list[Element]:
    return [
        _milestone_result(standing, proposal, milestone, rated)
        for milestone, rated in zip(proposal.milestones, health.milestones, strict=True)
    ]


def _milestone_result(
    standing: Standing, proposal: Proposal, milestone: Milestone, rated: MilestoneHealth
) -> Element:
    """An output: one indicator counting the milestone done (0 -> 1) over one period, from
    the programme's start to its due date, whose actual is present once it is completed."""
    due = milestone.due
    # A milestone due by the programme's start still needs a period that ends after it starts.
    start = min(standing.catalogue.programme_start, due - timedelta(days=1))
    # Many milestones add up to a count of milestones done, so they may be aggregated.
    result = Element("result", {"type": RESULT_OUTPUT, "aggregation-status": "1"})
    result.append(_narrated("title", milestone.title))
    draft = " (a draft date)" if proposal.dates_are_draft else ""
    result.append(_narrated("description", f"Milestone {milestone.id}, due {due}{draft}."))
    indicator = SubElement(result, "indicator", {"measure": MEASURE_UNIT, "ascending": "1"})
    indicator.append(_narrated("title", "Milestone completed (1) or not (0)"))
    _baseline(indicator, start, "0")
    period = _period(indicator, start, due, "1")
    if rated.status == "completed" and rated.updated_at is not None:
        day = _day(rated.updated_at)
        days = (day - due).days
        late = f", {days} {'day' if days == 1 else 'days'} after its due date" if days > 0 else ""
        verified = (proposal.id, milestone.id) in standing.verified
        office = "verified" if verified else "not yet verified"
        actual = SubElement(period, "actual", {"value": "1"})
        actual.append(
            _narrated("comment", f"Completed on {day}{late}; {office} by the programme office.")
        )
    return result


def _kpi_result(standing: Standing, kpi: Kpi) -> Element:
    """An impact: the KPI's one indicator, its baseline, and a period per reporting period
    whose target is the trajectory's value at its end and whose actual is the approved value
    (absent until one is approved)."""
    # The same regional figure is reported under every activity it evidences: summing it
    # across activities would count it again for each.
    result = Element("result", {"type": KPI_RESULT_TYPE, "aggregation-status": "0"})
    result.append(_narrated("title", kpi.title))
    source = f"Source: {kpi.source.rstrip('.')}."
    if kpi.comparator:
        source += f" Comparator: {kpi.comparator.rstrip('.')}."
    result.append(_narrated("description", source))
    indicator = SubElement(
        result,
        "indicator",
        {"measure": _measure(kpi.unit), "ascending": "1" if kpi.direction == "up" else "0"},
    )
    indicator.append(_narrated("title", f"{kpi.title} ({kpi.unit})"))
    indicator.append(_narrated("description", _trajectory_note(kpi)))
    where = f"kpis[{kpi.id}]"
    baseline = kpi.baseline
    _baseline(indicator, baseline.date, _decimal(baseline.value, f"{where}.baseline"))
    for p in standing.kpi_periods.get(kpi.id, ()):
        _kpi_period(standing, indicator, p, f"{where}[{p.period}]")
    return result


def _measure(unit: str) -> str:
    """Percentage for a unit of percent, else unit: counts, money and ratios alike."""
    return MEASURE_PERCENTAGE if _PERCENT.search(unit) else MEASURE_UNIT


def _trajectory_note(kpi: Kpi) -> str:
    """The indicator's description: its unit and direction, its path, what a period holds."""
    where = f"kpis[{kpi.id}]"
    good = "higher" if kpi.direction == "up" else "lower"
    note = (
        f"In {kpi.unit}; {good} is better. From {_decimal(kpi.baseline.value, where)} on "
        f"{kpi.baseline.date} to {_decimal(kpi.target.value, f'{where}.target')} by "
        f"{kpi.target.date} on a {kpi.shape} path; each period's target is the path's value "
        "at the period's end, and its actual the value of an approved return, if any."
    )
    if kpi.target_is_draft:
        note += " The target is a draft, for the programme office to confirm."
    return note


def _kpi_period(standing: Standing, indicator: Element, p: PeriodResult, where: str) -> None:
    period = _period(indicator, p.start, p.end, _decimal(p.target, f"{where}.target"))
    # Only an approved value leaves the programme: a return still under review has none.
    if p.actual is None:
        return
    actual = SubElement(period, "actual", {"value": _decimal(p.actual, f"{where}.actual")})
    note = "Approved return"
    if p.reporter is not None:
        authority = standing.catalogue.authority_by_id.get(p.reporter)
        note += f" of {authority.name if authority else p.reporter}"
    if p.approved_at is not None:
        note += f", approved on {_day(p.approved_at)}"
    actual.append(_narrated("comment", note + "."))


def _baseline(indicator: Element, day: date, value: str) -> None:
    SubElement(
        indicator,
        "baseline",
        {"year": str(day.year), "iso-date": day.isoformat(), "value": value},
    )


def _period(indicator: Element, start: date, end: date, target: str) -> Element:
    """A period of the indicator with its target; the caller adds an actual if there is one."""
    period = SubElement(indicator, "period")
    SubElement(period, "period-start", {"iso-date": start.isoformat()})
    SubElement(period, "period-end", {"iso-date": end.isoformat()})
    SubElement(period, "target", {"value": target})
    return period


# --- values -----------------------------------------------------------------------------


def _narrated(tag: str, text: str, attributes: dict[str, str] | None = None) -> Element:
    """An element whose text is one narrative (in the activity's language)."""
    element = Element(tag, attributes or {})
    SubElement(element, "narrative").text = _NOT_XML.sub("", text)
    return element


def _decimal(value: float, where: str) -> str:
    """A plain decimal (``54100``, ``5.17``, ``0.000001``): six places at most, no exponent,
    no trailing zeros, as the Standard's numeric ``value`` attributes are read."""
    if not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a number an IATI value can carry")
    # repr's shortest form first, so 5.17 is not written as its binary expansion.
    text = format(Decimal(repr(round(value, 6))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _instant(moment: datetime) -> str:
    """An xsd:dateTime in UTC (``2026-07-01T12:00:00Z``)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone: an export does not guess one")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(moment: datetime) -> date:
    """The UTC day of an instant, as the ratings read due dates."""
    return moment.astimezone(UTC).date()
