"""The programme gauges of ``/metrics``: per proposal and per KPI, from the live board's typed
health records, and their text.

:func:`render_gauges` writes the text that prometheus_client's ``generate_latest`` writes for
the same families (label names sorted, values as Go formats them) without building a sample
object per series: a programme of a thousand proposals has tens of thousands of series,
scraped every few seconds. :class:`GaugeEncoder` keeps each proposal's lines from one
snapshot of the live board to the next (``snapshot.build_snapshot``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from services.aggregator.board import Locks, milestone_counts, rag_value
from services.aggregator.board import approved as approval
from shared.catalogue import Catalogue, Proposal
from shared.health import ProgrammeHealth, ProposalHealth

PROPOSAL_LABELS = ["column", "proposal"]


@dataclass
class Gauge:
    """A gauge family as plain tuples: label values in ``labels`` order, and a value."""

    name: str
    documentation: str
    labels: list[str]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.samples.append((tuple(labels), value))

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.samples:
            family.add_metric(labels, value)
        return family


def programme_gauges(catalogue: Catalogue, health: ProgrammeHealth) -> list[Gauge]:
    """Every programme gauge of one snapshot, from the catalogue and the typed health
    records; a pure function."""
    gauges = proposal_gauges()
    for column in catalogue.columns:
        for proposal in catalogue.proposals_of(column.id):
            add_proposal(gauges, column.id, proposal, health.proposals[proposal.id])
    return [*gauges, *kpi_gauges(catalogue, health)]


def proposal_gauges() -> list[Gauge]:
    """The per-proposal programme gauges, empty, in their order on ``/metrics``."""
    return [
        Gauge("cotn_proposal_rag", "Proposal RAG: 0 green, 1 amber, 2 red", PROPOSAL_LABELS),
        Gauge(
            "cotn_proposal_stalled",
            "1 when the proposal has unfinished milestones and no milestone event within its "
            "stall threshold",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_proposal_last_progress_timestamp_seconds",
            "Event time of the proposal's newest milestone event, or the programme start "
            "before any; stalled when time() - this > cotn_proposal_stall_threshold_seconds",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_proposal_stall_threshold_seconds",
            "Seconds without a milestone event after which the proposal is stalled (catalogue)",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_proposal_unfinished_milestones",
            "Milestones of the proposal not yet completed",
            PROPOSAL_LABELS,
        ),
        Gauge(
            "cotn_milestones",
            "Milestones of the proposal in each status",
            [*PROPOSAL_LABELS, "status"],
        ),
        Gauge(
            "cotn_milestone_overdue",
            "1 when the milestone's due date has passed and it is not completed",
            [*PROPOSAL_LABELS, "milestone"],
        ),
        Gauge(
            "cotn_proposal_info",
            "Always 1: the proposal's title and kind, to join onto other proposal metrics",
            [*PROPOSAL_LABELS, "title", "kind"],
        ),
    ]


def add_proposal(gauges: list[Gauge], column: str, proposal: Proposal, p: ProposalHealth) -> None:
    """One proposal's samples, added to :func:`proposal_gauges`' gauges."""
    rag, stalled, last_progress, threshold, unfinished, milestones, overdue, info = gauges
    labels = (column, proposal.id)
    counts = milestone_counts(p)
    rag.add_metric(labels, rag_value(p.rag))
    stalled.add_metric(labels, int(p.stalled))
    last_progress.add_metric(labels, p.last_progress.timestamp())
    threshold.add_metric(labels, p.stall_threshold.total_seconds())
    unfinished.add_metric(labels, len(p.milestones) - counts["completed"])
    for status, count in counts.items():
        milestones.add_metric((*labels, status), count)
    for m in p.milestones:
        overdue.add_metric((*labels, m.id), int(m.overdue))
    info.add_metric((*labels, proposal.title, proposal.kind), 1)


def kpi_gauges(catalogue: Catalogue, health: ProgrammeHealth) -> list[Gauge]:
    """The per-KPI programme gauges of one snapshot."""
    value = Gauge("cotn_kpi_value", "The KPI's latest reported actual", ["kpi"])
    expected = Gauge("cotn_kpi_expected", "The KPI's trajectory value now", ["kpi"])
    target = Gauge("cotn_kpi_target", "The KPI's target value", ["kpi"])
    off = Gauge(
        "cotn_kpi_off_trajectory",
        "1 when the latest actual is worse than its trajectory beyond the KPI's tolerance",
        ["kpi"],
    )
    evidence = Gauge(
        "cotn_kpi_evidence",
        "Always 1: a proposal the KPI evidences (catalogue), to take KPI alerts to its column",
        ["kpi", *PROPOSAL_LABELS],
    )
    column_of = catalogue.column_of
    for kpi in catalogue.kpis:
        k = health.kpis[kpi.id]
        for proposal_id in kpi.evidences:
            evidence.add_metric((kpi.id, column_of[proposal_id], proposal_id), 1)
        expected.add_metric((kpi.id,), k.expected_now)
        target.add_metric((kpi.id,), k.target)
        # No actual yet: no sample, rather than a zero that would read as a real value.
        if k.actual is not None:
            value.add_metric((kpi.id,), k.actual)
            off.add_metric((kpi.id,), int(k.on_track is False))
    return [value, expected, target, off, evidence]


def approval_gauge(catalogue: Catalogue, health: ProgrammeHealth, locks: Locks) -> Gauge:
    """Whether the office approved each KPI's latest actual (the board's): a pure function."""
    approved = Gauge(
        "cotn_kpi_actual_approved",
        "1 when the office approved the KPI's latest actual (cotn_kpi_value), else 0",
        ["kpi"],
    )
    for kpi in catalogue.kpis:
        k = health.kpis[kpi.id]
        flag = approval(locks, kpi.id, k.actual_period, k.event.source if k.event else None)
        if k.actual is not None and flag is not None:
            approved.add_metric((kpi.id,), int(flag))
    return approved


_SMALL_INTS = [floatToGoString(n) for n in range(256)]


def _value_text(value: float) -> str:
    # Counts and flags are small ints: most series of a large programme.
    if type(value) is int and 0 <= value < len(_SMALL_INTS):
        return _SMALL_INTS[value]
    return floatToGoString(value)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


MAX_CACHED_SERIES = 200_000
_series_text: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], str]] = {}
"""Family (name, label names) -> label values -> the series' text before its value. The
series of a programme recur on every scrape and are bounded by the catalogue: each one's
escaping and formatting is done once, not once per scrape."""


def _series(gauge: Gauge, labels: tuple[str, ...]) -> str:
    """``name{a="x",b="y"} ``: label names sorted, as prometheus_client sorts them."""
    if not labels:
        return gauge.name + " "
    pairs = sorted(zip(gauge.labels, labels, strict=True))
    return gauge.name + "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in pairs) + "} "


def render_gauges(gauges: list[Gauge]) -> bytes:
    """The 0.0.4 text exposition of ``gauges``, as ``generate_latest`` would write it."""
    return "".join(_header(g) + _samples(g) for g in gauges).encode()


def _header(gauge: Gauge) -> str:
    help_text = gauge.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {gauge.name} {help_text}\n# TYPE {gauge.name} gauge\n"


def _samples(gauge: Gauge) -> str:
    """``gauge``'s sample lines."""
    known = _series_text.setdefault((gauge.name, tuple(gauge.labels)), {})
    out: list[str] = []
    for labels, value in gauge.samples:
        series = known.get(labels)
        if series is None:
            series = _series(gauge, labels)
            if sum(map(len, _series_text.values())) < MAX_CACHED_SERIES:
                known[labels] = series
        out.append(f"{series}{_value_text(value)}\n")
    return "".join(out)


class GaugeEncoder:
    """The programme gauges' text (:func:`programme_gauges` and the approval gauge, as
    :func:`render_gauges` writes them) made of each proposal's sample lines kept from one
    snapshot to the next: a proposal's lines are written again only when its rating record
    changed (:func:`shared.health.rerate` keeps the records of the proposals it did not
    rate again). The KPIs' gauges, a few lines each, are written whole. A test holds the
    bytes equal to the gauges rendered whole."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._headers = [_header(g) for g in proposal_gauges()]
        self._kept: dict[str, tuple[ProposalHealth, list[str]]] = {}

    def render(self, health: ProgrammeHealth, locks: Locks) -> bytes:
        c = self._catalogue
        lines = [
            self._lines(column.id, proposal, health.proposals[proposal.id])
            for column in c.columns
            for proposal in c.proposals_of(column.id)
        ]
        out = [
            header + "".join(each[i] for each in lines) for i, header in enumerate(self._headers)
        ]
        rest = [*kpi_gauges(c, health), approval_gauge(c, health, locks)]
        return ("".join(out) + "".join(_header(g) + _samples(g) for g in rest)).encode()

    def _lines(self, column: str, proposal: Proposal, record: ProposalHealth) -> list[str]:
        kept = self._kept.get(proposal.id)
        if kept is not None and kept[0] is record:
            return kept[1]
        gauges = proposal_gauges()
        add_proposal(gauges, column, proposal, record)
        lines = [_samples(g) for g in gauges]
        self._kept[proposal.id] = (record, lines)
        return lines
