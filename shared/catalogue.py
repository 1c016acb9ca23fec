"""The programme catalogue: what is monitored, shipped as data and checked by pydantic.

The catalogue is a YAML file (``shared/data/catalogue.yaml`` by default). The programme
office edits it; the services load it at start-up. :func:`load_catalogue` refuses a file
with any problem and :func:`check_catalogue` lists every problem with its place.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from shared.durations import Duration, format_duration
from shared.durations import _coerce as _coerce_duration

DEFAULT_CATALOGUE = Path(__file__).parent / "data" / "catalogue.yaml"
# libyaml's safe loader where PyYAML was built with it: a large catalogue loads ~10x faster.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CATALOGUE_ENV = "COTN_CATALOGUE"

Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""Readable, stable ids; safe as a NATS subject token and a Prometheus label."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Column(_Model):
    id: Id
    title: str
    proposals: list[Id] = Field(description="Proposals and gamechangers this column delivers")


class Priority(_Model):
    id: int = Field(ge=1)
    title: str
    text: str


OrganisationType = Literal[10, 11, 15, 21, 22, 23, 24, 30, 40, 60, 70, 71, 72, 73, 80, 90]
"""A code of IATI's OrganisationType codelist: 10 Government, 11 Local Government, 15 Other
Public Sector, 21-24 NGOs, 30 Public Private Partnership, 40 Multilateral, 60 Foundation,
70-73 Private Sector, 80 Academic, Training and Research, 90 Other."""

_ORGANISATION_REF = re.compile(r"[A-Z]{2}-[A-Z0-9]+-[^\s/&|?]+")
_IDENTIFIER_TEXT = re.compile(r"[^\s/&|?]+")


def _organisation_ref(value: str) -> str:
    if not _ORGANISATION_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an IATI organisation identifier: {{agency}}-{{number}}, as in "
            "GB-COH-01234567, without spaces or any of / & | ?"
        )
    return value


def _identifier_text(value: str) -> str:
    if not _IDENTIFIER_TEXT.fullmatch(value):
        raise ValueError(f"{value!r} may not be empty or hold spaces or any of / & | ?")
    return value


OrganisationRef = Annotated[str, AfterValidator(_organisation_ref)]
"""An IATI organisation identifier: ``{registration agency}-{number}``, the agency a country
(or XM, XI) code and a name (``GB-COH-01234567``); no spaces nor any of ``/&|?`` (the IATI
rulesets refuse them in identifiers)."""


class Authority(_Model):
    id: Id
    name: str
    kind: Literal["combined_authority", "strategic_authority", "body"]
    iati_ref: OrganisationRef | None = Field(
        default=None, description="Its IATI organisation identifier, if it has one"
    )
    iati_type: OrganisationType | None = Field(
        default=None,
        description="Its IATI organisation type; by default 11 (Local Government) for a "
        "combined or strategic authority and none for a body",
    )


def _lag(value: object) -> object:
    """A dependency's lag: a duration as in ``stall_threshold``, or 0 for none."""
    if value in (0, "0", "0d") and not isinstance(value, bool):
        return timedelta(0)
    return _coerce_duration(value)


Lag = Annotated[
    timedelta,
    BeforeValidator(_lag),
    PlainSerializer(lambda v: format_duration(v) if v else "0d", return_type=str),
]


class Follow(_Model):
    """A milestone that must finish first, and how long after it this one can finish."""

    proposal: Id | None = Field(
        default=None,
        description="The proposal or gamechanger of the milestone; this one's if absent",
    )
    milestone: Id
    lag: Lag = Field(
        default=timedelta(0), description="Time needed after it finishes (e.g. 30d); 0 for none"
    )
    draft: bool = Field(
        default=True,
        description="A plausible draft dependency, for the programme office to confirm",
    )


MilestoneKey = tuple[str, str]
"""(proposal id, milestone id): a milestone anywhere in the programme."""


class Milestone(_Model):
    id: Id
    title: str
    due: date
    follows: list[Follow] = Field(
        default_factory=list, description="Milestones (of any proposal) it follows, with a lag"
    )


class Proposal(_Model):
    """A proposal of the paper, or a gamechanger tracked the same way."""

    id: Id
    kind: Literal["proposal", "gamechanger"] = "proposal"
    title: str
    priority: int | None = None
    text: str = Field(description="The proposal's full text from the paper")
    annex_text: str | None = Field(default=None, description="Its wording in the annex")
    partners: list[Id]
    milestones: list[Milestone] = Field(min_length=1)
    stall_threshold: Duration
    overdue_grace: Duration = timedelta(days=14)
    dates_are_draft: bool = True
    updates: Updates | None = Field(
        default=None, description="Who owes progress updates and how often; None for nobody"
    )

    @cached_property
    def milestone_by_id(self) -> dict[str, Milestone]:
        return {m.id: m for m in reversed(self.milestones)}

    def milestone(self, milestone_id: str) -> Milestone | None:
        """The milestone with this id (the first, should a catalogue repeat one), or None."""
        return self.milestone_by_id.get(milestone_id)


Frequency = Literal["monthly", "quarterly", "annual"]
"""How often a return is owed: one per month (``2026-07``), quarter (``2026-Q3``) or year."""


class Window(_Model):
    """When one authority owes returns: it may join after the programme starts or leave."""

    authority: Id
    since: date | None = Field(default=None, description="First day it owes returns for")
    until: date | None = Field(default=None, description="Last day it owes returns for")


class Returns(_Model):
    """How often returns are owed and how many days after a period's end each is due."""

    frequency: Frequency
    due_days: int = Field(ge=0, description="Days after the period's end a return is due by")
    windows: list[Window] = Field(
        default_factory=list,
        description="Dates from and until which an authority owes returns (default: always)",
    )

    def window_of(self, authority: str) -> Window | None:
        """The window of ``authority`` (the first, should a catalogue repeat one), or None."""
        return next((w for w in self.windows if w.authority == authority), None)


class Updates(Returns):
    """Who owes a progress update of a proposal (a milestone event or ``org.cotn.update.v1``)."""

    by: list[Id] = Field(min_length=1, description="The partners that owe progress updates")


class Point(_Model):
    value: float
    date: date


class Kpi(_Model):
    id: Id
    title: str
    unit: str
    direction: Literal["up", "down"]
    baseline: Point
    target: Point
    shape: Literal["linear", "compound"]
    tolerance: float = Field(default=0.05, ge=0, lt=1, description="Relative slack before off")
    evidences: list[Id] = Field(min_length=1)
    reporters: list[Id] = Field(min_length=1)
    source: str = Field(description="Where the paper gives the figure")
    comparator: str | None = None
    target_is_draft: bool = False
    returns: Returns | None = Field(
        default=None, description="How often its reporters owe a return; None for no obligation"
    )


DRAFT_REPORTING_ORG_REF = "GB-COTN-DRAFT"
"""A placeholder, not a registered identifier: there is no ``GB-COTN`` registration agency."""


class ReportingOrg(_Model):
    """The organisation that publishes the programme to IATI (``reporting-org``)."""

    ref: OrganisationRef = Field(
        default=DRAFT_REPORTING_ORG_REF, description="Its registered IATI organisation identifier"
    )
    type: OrganisationType = Field(default=90, description="Its IATI organisation type")
    name: str = Field(default="Convention of the North", min_length=1)
    draft: bool = Field(
        default=True,
        description="The identifier is a placeholder until the programme office registers one",
    )


class Iati(_Model):
    """How the programme is published as IATI activities (``shared/exports/iati.py``)."""

    reporting_org: ReportingOrg = Field(default_factory=ReportingOrg)
    activity_prefix: Annotated[str, AfterValidator(_identifier_text)] | None = Field(
        default=None,
        description="Activity identifiers are <prefix>-<proposal id>; the prefix is the "
        "reporting organisation's ref or begins with it and a hyphen (default: the ref)",
    )
    sector_vocabulary_uri: AnyUrl | None = Field(
        default=None,
        description="Where the policy priorities, used as the reporting organisation's own "
        "sector vocabulary (99), are published; omitted from the export when absent",
    )

    @property
    def identifier_prefix(self) -> str:
        """What every activity identifier starts with, before ``-<proposal id>``."""
        return self.activity_prefix or self.reporting_org.ref


class Catalogue(_Model):
    """The whole programme. Cross-references are checked after the fields."""

    programme: str
    status: str
    programme_start: date = Field(
        description="When progress is first expected: stall clocks start here"
    )
    columns: list[Column]
    priorities: list[Priority]
    proposals: list[Proposal]
    kpis: list[Kpi]
    authorities: list[Authority]
    iati: Iati = Field(
        default_factory=Iati, description="The reporting organisation and activity identifiers"
    )

    @model_validator(mode="after")
    def _cross_references(self) -> Catalogue:
        problems = list(_cross_reference_problems(self))
        if problems:
            raise _CrossReferenceError(problems)
        return self

    @cached_property
    def column_of(self) -> dict[str, str]:
        """Proposal id -> the id of the column that delivers it."""
        return {p: c.id for c in self.columns for p in c.proposals}

    @cached_property
    def proposal_by_id(self) -> dict[str, Proposal]:
        return {p.id: p for p in self.proposals}

    @cached_property
    def kpi_by_id(self) -> dict[str, Kpi]:
        return {k.id: k for k in self.kpis}

    @cached_property
    def authority_by_id(self) -> dict[str, Authority]:
        return {a.id: a for a in self.authorities}

    @cached_property
    def column_by_id(self) -> dict[str, Column]:
        return {c.id: c for c in self.columns}

    @cached_property
    def kpis_evidencing(self) -> dict[str, list[Kpi]]:
        """Proposal id -> the KPIs that evidence it, in catalogue order."""
        out: dict[str, list[Kpi]] = {}
        for k in self.kpis:
            for p in dict.fromkeys(k.evidences):
                out.setdefault(p, []).append(k)
        return out

    def home_of_kpi(self, kpi_id: str) -> tuple[str, str]:
        """The (column, proposal) a KPI's returns and their reviews are filed under, for the
        office and its metrics: the first proposal it evidences, and that one's column."""
        proposal = self.kpi_by_id[kpi_id].evidences[0]
        return self.column_of[proposal], proposal

    def proposals_of(self, column_id: str) -> list[Proposal]:
        return [self.proposal_by_id[p] for p in self.column_by_id[column_id].proposals]

    @cached_property
    def predecessors(self) -> dict[MilestoneKey, tuple[tuple[MilestoneKey, timedelta], ...]]:
        """Milestone -> the milestones it follows, each with its lag (only those that follow
        something)."""
        out: dict[MilestoneKey, tuple[tuple[MilestoneKey, timedelta], ...]] = {}
        for p in self.proposals:
            for m in p.milestones:
                if m.follows:
                    out[(p.id, m.id)] = tuple(
                        ((f.proposal or p.id, f.milestone), f.lag) for f in m.follows
                    )
        return out

    @cached_property
    def followers(self) -> dict[MilestoneKey, tuple[MilestoneKey, ...]]:
        """Milestone -> the milestones that follow it directly (only those followed)."""
        out: dict[MilestoneKey, list[MilestoneKey]] = {}
        for key, preds in self.predecessors.items():
            for pred, _lag in preds:
                out.setdefault(pred, []).append(key)
        return {pred: tuple(keys) for pred, keys in out.items()}

    def downstream(self, keys: Iterable[MilestoneKey]) -> set[MilestoneKey]:
        """``keys`` and every milestone that follows one of them, transitively."""
        followers = self.followers
        seen = set(keys)
        todo = [k for k in seen if k in followers]
        while todo:
            for key in followers.get(todo.pop(), ()):
                if key not in seen:
                    seen.add(key)
                    todo.append(key)
        return seen

    @cached_property
    def upstream_of(self) -> dict[str, frozenset[str]]:
        """Proposal id -> the other proposals whose milestones its milestones follow,
        transitively (what its dependency rating reads)."""
        direct: dict[str, set[str]] = {}
        for (pid, _), preds in self.predecessors.items():
            direct.setdefault(pid, set()).update(q for (q, _), _lag in preds)
        out: dict[str, frozenset[str]] = {}
        for pid in direct:
            seen: set[str] = set()
            todo = [pid]
            while todo:
                for q in direct.get(todo.pop(), ()):
                    if q not in seen:
                        seen.add(q)
                        todo.append(q)
            seen.discard(pid)
            out[pid] = frozenset(seen)
        return out


class _CrossReferenceError(ValueError):
    """Carries the problem list itself: a message may contain "; ", so it cannot be re-split."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _duplicates(kind: str, ids: list[str] | list[int]) -> list[str]:
    return [f"{kind}: duplicate id {i!r}" for i, n in Counter(ids).items() if n > 1]


def _cross_reference_problems(cat: Catalogue) -> list[str]:
    problems: list[str] = []
    problems += _duplicates("columns", [c.id for c in cat.columns])
    problems += _duplicates("priorities", [p.id for p in cat.priorities])
    problems += _duplicates("proposals", [p.id for p in cat.proposals])
    problems += _duplicates("kpis", [k.id for k in cat.kpis])
    problems += _duplicates("authorities", [a.id for a in cat.authorities])
    authorities = {a.id for a in cat.authorities}
    priorities = {p.id for p in cat.priorities}
    proposals = {p.id for p in cat.proposals}

    placed: dict[str, list[str]] = {}
    for column in cat.columns:
        for pid in column.proposals:
            placed.setdefault(pid, []).append(column.id)
            if pid not in proposals:
                problems.append(f"columns[{column.id}].proposals: unknown proposal {pid!r}")
    for proposal in cat.proposals:
        where = f"proposals[{proposal.id}]"
        columns = placed.get(proposal.id, [])
        if not columns:
            problems.append(f"{where}: in no column")
        elif len(columns) > 1:
            problems.append(f"{where}: in more than one column ({', '.join(columns)})")
        if proposal.kind == "proposal" and proposal.priority is None:
            problems.append(f"{where}.priority: a proposal must name its policy priority")
        if proposal.priority is not None and proposal.priority not in priorities:
            problems.append(f"{where}.priority: unknown priority {proposal.priority}")
        problems += [
            f"{where}.partners: {a!r} is not a known authority"
            for a in proposal.partners
            if a not in authorities
        ]
        problems += _duplicates(f"{where}.milestones", [m.id for m in proposal.milestones])
        if proposal.updates is not None:
            problems += _returns_problems(f"{where}.updates", proposal.updates, proposal.partners)
            problems += [
                f"{where}.updates.by: {a!r} is not a partner of {proposal.id}"
                for a in proposal.updates.by
                if a not in proposal.partners
            ]
        for before, after in zip(proposal.milestones, proposal.milestones[1:], strict=False):
            if after.due < before.due:
                problems.append(
                    f"{where}.milestones[{after.id}].due: {after.due} is before "
                    f"{before.id} ({before.due}); milestones must be in date order"
                )
    problems += _dependency_problems(cat)
    problems += _iati_problems(cat.iati)
    for kpi in cat.kpis:
        where = f"kpis[{kpi.id}]"
        if kpi.target.date <= kpi.baseline.date:
            problems.append(
                f"{where}.target.date: {kpi.target.date} is not after the baseline date "
                f"{kpi.baseline.date}"
            )
        if kpi.shape == "compound" and (kpi.baseline.value <= 0 or kpi.target.value <= 0):
            problems.append(f"{where}.shape: a compound trajectory needs positive values")
        problems += [
            f"{where}.reporters: {a!r} is not a known authority"
            for a in kpi.reporters
            if a not in authorities
        ]
        problems += [
            f"{where}.evidences: unknown proposal {p!r}"
            for p in kpi.evidences
            if p not in proposals
        ]
        if kpi.returns is not None:
            problems += _returns_problems(f"{where}.returns", kpi.returns, kpi.reporters)
    return problems


def _iati_problems(iati: Iati) -> list[str]:
    """IATI activity identifiers must begin with the reporting organisation's identifier."""
    ref, prefix = iati.reporting_org.ref, iati.activity_prefix
    if prefix is not None and prefix != ref and not prefix.startswith(f"{ref}-"):
        return [
            f"iati.activity_prefix: {prefix!r} does not begin with the reporting "
            f"organisation's ref {ref!r} (use {ref!r} or {ref + '-...'!r})"
        ]
    return []


def _returns_problems(where: str, returns: Returns, owers: list[str]) -> list[str]:
    """A reporter window must end after it starts and be of one who owes the returns."""
    problems = _duplicates(f"{where}.windows", [w.authority for w in returns.windows])
    for window in returns.windows:
        place = f"{where}.windows[{window.authority}]"
        if window.authority not in owers:
            problems.append(
                f"{place}: {window.authority!r} does not owe these returns "
                f"(they are owed by {', '.join(owers)})"
            )
        if window.since and window.until and window.until < window.since:
            problems.append(
                f"{place}.until: {window.until} is before its since date {window.since}"
            )
    return problems


def _dependency_problems(cat: Catalogue) -> list[str]:
    """Unknown milestones named in ``follows``, and cycles, each naming its place."""
    problems: list[str] = []
    milestones = {(p.id, m.id) for p in cat.proposals for m in p.milestones}
    graph: dict[MilestoneKey, list[MilestoneKey]] = {}
    for p in cat.proposals:
        for m in p.milestones:
            for f in m.follows:
                target = (f.proposal or p.id, f.milestone)
                where = f"proposals[{p.id}].milestones[{m.id}].follows"
                if target not in milestones:
                    problems.append(f"{where}: unknown milestone {target[0]}/{target[1]}")
                elif target == (p.id, m.id):
                    problems.append(f"{where}: {p.id}/{m.id} follows itself")
                else:
                    graph.setdefault((p.id, m.id), []).append(target)
    # Depth-first search; a back edge closes a cycle, named from its first milestone.
    state: dict[MilestoneKey, int] = {}
    path: list[MilestoneKey] = []
    cycles: list[list[MilestoneKey]] = []

    def visit(node: MilestoneKey) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    for cycle in cycles:
        chain = " -> ".join(f"{a}/{b}" for a, b in cycle)
        a, b = cycle[0]
        problems.append(f"proposals[{a}].milestones[{b}].follows: dependency cycle {chain}")
    return problems


class CatalogueError(ValueError):
    """A catalogue that cannot be used; ``problems`` lists each with its place."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _place(loc: tuple[int | str, ...], raw: object) -> str:
    """Render a pydantic location with ids instead of list indexes where they exist."""
    text = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            text += f"[{ident}]" if ident is not None else f"[{part}]"
            node = item
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text


def check_catalogue(path: str | Path) -> tuple[Catalogue | None, list[str]]:
    """Load a catalogue file and return it with every problem found, each naming its place."""
    source = str(path)
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except OSError as exc:
        return None, [f"{source}: cannot read: {exc.strerror or exc}"]
    except yaml.YAMLError as exc:
        return None, [f"{source}: not valid YAML: {exc}"]
    if not isinstance(raw, dict):
        return None, [f"{source}: the catalogue must be a mapping at the top level"]
    try:
        return Catalogue.model_validate(raw), []
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            place = _place(err["loc"], raw)
            message = str(err["msg"]).removeprefix("Value error, ")
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, _CrossReferenceError):
                problems += cause.problems
            else:
                problems.append(f"{place}: {message}" if place else message)
        return None, problems


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load the catalogue named by ``path``, ``$COTN_CATALOGUE`` or the shipped default."""
    chosen = Path(path or os.environ.get(CATALOGUE_ENV) or DEFAULT_CATALOGUE)
    catalogue, problems = check_catalogue(chosen)
    if catalogue is None:
        raise CatalogueError(str(chosen), problems)
    return catalogue
