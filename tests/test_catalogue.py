"""The shipped catalogue is the paper's programme, and broken catalogues are refused by place."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from shared.catalogue import (
    CATALOGUE_ENV,
    DEFAULT_CATALOGUE,
    Catalogue,
    CatalogueError,
    check_catalogue,
    load_catalogue,
)
from shared.durations import Duration, format_duration, parse_duration

SEED_DIR = Path(__file__).parents[2] / "shared" / "seed"

AUTHORITIES = [
    "greater-manchester",
    "liverpool-city-region",
    "west-yorkshire",
    "south-yorkshire",
    "north-east",
    "tees-valley",
    "york-north-yorkshire",
    "hull-east-yorkshire",
    "lancashire",
    "cumbria",
]
BODIES = ["np11", "nhsa", "innovate-uk", "northern-universities", "northern-gritstone"]


def _normalise(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    catalogue, problems = check_catalogue(DEFAULT_CATALOGUE)
    assert problems == []
    assert catalogue is not None
    return catalogue


@pytest.fixture(scope="module")
def paper() -> str:
    """The seed paper, whitespace-normalised; skipped only where the seed folder is absent."""
    if not SEED_DIR.is_dir():
        pytest.skip(f"no seed paper at {SEED_DIR} (CI has it)")
    files = sorted(SEED_DIR.glob("*.txt"))
    assert files, f"{SEED_DIR} holds no paper"
    return _normalise("\n".join(f.read_text(encoding="utf-8") for f in files))


# --- the shipped catalogue -------------------------------------------------------------


def test_shipped_catalogue_passes_the_check() -> None:
    catalogue, problems = check_catalogue(DEFAULT_CATALOGUE)
    assert problems == []
    assert catalogue is not None
    assert load_catalogue(DEFAULT_CATALOGUE) == catalogue


def test_columns_hold_the_papers_proposals(shipped: Catalogue) -> None:
    columns = {
        c.id: (c.title, [p for p in c.proposals if shipped.proposal_by_id[p].kind == "proposal"])
        for c in shipped.columns
    }
    assert columns == {
        "collaboration": ("Pan-Northern and Intra-Northern collaboration", ["2a", "2b"]),
        "devolution": ("Greater devolution to Northern Places", ["1a"]),
        "business": ("Business, investment and institutional activity", ["3a", "3b"]),
    }


def test_gamechangers_are_assigned_to_columns(shipped: Catalogue) -> None:
    gamechangers = {p.id: p.title for p in shipped.proposals if p.kind == "gamechanger"}
    assert gamechangers == {
        "prevention": "Prevention: NHTA Institute for Preventative Health Research",
        "ai-cluster": "Northern cluster of AI excellence",
    }
    assert shipped.column_of["prevention"] == "devolution"
    assert shipped.column_of["ai-cluster"] == "collaboration"
    assert all(shipped.proposal_by_id[g].priority is None for g in gamechangers)


def test_policy_priorities(shipped: Catalogue) -> None:
    assert {p.id: p.title for p in shipped.priorities} == {
        1: "Boost public and private R&D investment through cluster growth",
        2: "Support business innovation",
        3: "Increasing innovation capacity through collaboration",
    }
    proposals = {p.id: p.priority for p in shipped.proposals if p.kind == "proposal"}
    assert proposals == {"1a": 1, "2a": 2, "2b": 2, "3a": 3, "3b": 3}


def test_proposal_titles(shipped: Catalogue) -> None:
    assert {p.id: p.title for p in shipped.proposals if p.kind == "proposal"} == {
        "1a": "Devolution of innovation support",
        "2a": "Diffusion of technology",
        "2b": "Early market finance",
        "3a": "Innovation trade and investment programme",
        "3b": "Northern innovation policy network",
    }


def test_texts_are_the_papers_words(shipped: Catalogue, paper: str) -> None:
    texts = {f"{p.id}.text": p.text for p in shipped.proposals}
    texts |= {f"{p.id}.annex_text": p.annex_text for p in shipped.proposals if p.annex_text}
    texts |= {f"priority {p.id}.text": p.text for p in shipped.priorities}
    texts |= {f"column {c.id}.title": c.title for c in shipped.columns}
    assert len(texts) == 7 + 5 + 3 + 3
    missing = [where for where, text in texts.items() if _normalise(text) not in paper]
    assert missing == []


def test_priority_titles_are_the_papers_headings(shipped: Catalogue, paper: str) -> None:
    for priority in shipped.priorities:
        heading = f"Policy Priority {priority.id}: {priority.title}"
        assert heading.lower() in paper.lower()


def test_proposal_text_is_the_full_text_and_annex_the_annex(shipped: Catalogue) -> None:
    one_a = shipped.proposal_by_id["1a"]
    assert one_a.text.startswith("Building on the Government's English Devolution White Paper")
    assert one_a.text.endswith("to build an integrated environment for clusters to grow.")
    assert one_a.annex_text is not None
    assert one_a.annex_text.startswith("Collectively advocate for devolution")


KPI_FIGURES = [
    # kpi, unit, baseline value, baseline year, target value, target year (None: the paper
    # gives no such figure, the catalogue's is a draft)
    ("life-sciences-jobs", "jobs", 54_100, 2020, 118_700, 2040),
    ("life-sciences-gva", "GBP bn", 5.17, 2020, 16.52, 2040),
    ("health-research-funding-per-person", "GBP per person", 25, None, 69, None),
    ("private-rd-per-public-pound", "GBP per GBP", 1, None, 1, None),
    ("rd-boost-gva", "GBP bn", None, None, 22, 2050),
    ("early-stage-finance", "GBP m", 150, None, None, None),
    ("exports", "GBP bn", 126, 2022, None, None),
]


@pytest.mark.parametrize(
    ("kpi_id", "unit", "base", "base_year", "target", "target_year"),
    KPI_FIGURES,
    ids=[k[0] for k in KPI_FIGURES],
)
def test_kpi_figures(
    shipped: Catalogue,
    kpi_id: str,
    unit: str,
    base: float | None,
    base_year: int | None,
    target: float | None,
    target_year: int | None,
) -> None:
    kpi = shipped.kpi_by_id[kpi_id]
    assert kpi.unit == unit
    assert kpi.direction == "up"
    if base is not None:
        assert kpi.baseline.value == base
    if base_year is not None:
        assert kpi.baseline.date.year == base_year
    if target is not None:
        assert kpi.target.value == target
    if target_year is not None:
        assert kpi.target.date.year == target_year
    assert kpi.target.date > kpi.baseline.date


def test_kpi_list_is_complete(shipped: Catalogue) -> None:
    assert [k.id for k in shipped.kpis] == [k[0] for k in KPI_FIGURES]


def test_health_research_target_is_parity_with_the_greater_south_east(shipped: Catalogue) -> None:
    kpi = shipped.kpi_by_id["health-research-funding-per-person"]
    assert kpi.comparator is not None
    assert "Greater South East" in kpi.comparator
    assert "parity" in kpi.comparator
    assert kpi.target_is_draft


def test_early_stage_finance_is_northern_gritstones(shipped: Catalogue) -> None:
    kpi = shipped.kpi_by_id["early-stage-finance"]
    assert "Northern Gritstone" in kpi.source
    assert "northern-gritstone" in kpi.reporters


PAPER_FIGURES = [
    ("life-sciences-jobs", "54,100 in 2020 to 118,700"),
    ("life-sciences-gva", "£5.17bn to £16.52bn"),
    ("health-research-funding-per-person", "£25 per person, compared to £69 per person"),
    ("private-rd-per-public-pound", "each £1 of public R&D investment attracting £1 of private"),
    ("rd-boost-gva", "annual £6 billion boost could add £22 billion in GVA by 2050"),
    ("early-stage-finance", "Northern Gritstone"),
    ("early-stage-finance", "raised £150 million"),
    ("exports", "£126 billion in exports in 2022"),
]


@pytest.mark.parametrize(("kpi_id", "quote"), PAPER_FIGURES)
def test_kpi_figures_are_the_papers(
    shipped: Catalogue, paper: str, kpi_id: str, quote: str
) -> None:
    assert kpi_id in shipped.kpi_by_id
    assert quote in paper


def test_authorities_and_bodies(shipped: Catalogue) -> None:
    places = [a.id for a in shipped.authorities if a.kind != "body"]
    bodies = [a.id for a in shipped.authorities if a.kind == "body"]
    assert places == AUTHORITIES
    assert bodies == BODIES
    assert shipped.authority_by_id["lancashire"].kind == "strategic_authority"
    assert shipped.authority_by_id["greater-manchester"].kind == "combined_authority"


def test_milestones_are_a_dated_draft_within_2025_to_2027(shipped: Catalogue) -> None:
    for proposal in shipped.proposals:
        dues = [m.due for m in proposal.milestones]
        assert dues == sorted(dues), proposal.id
        assert all(date(2025, 1, 1) <= due <= date(2027, 12, 31) for due in dues), proposal.id
        assert proposal.dates_are_draft, proposal.id
        assert proposal.stall_threshold > timedelta(0), proposal.id


def test_shipped_dependencies_are_a_consistent_draft(shipped: Catalogue) -> None:
    """Every dependency is marked draft, and the draft dates leave room for each lag: on the
    plan as drafted, nothing is at risk because of what it follows."""
    follows = [(p, m, f) for p in shipped.proposals for m in p.milestones for f in m.follows]
    assert len(follows) >= 10
    assert {f.draft for _, _, f in follows} == {True}
    across = {(f.proposal or p.id) for p, _, f in follows} - {p.id for p, _, _ in follows}
    assert {p.id for p, _, f in follows if f.proposal not in (None, p.id)} >= {"1a", "2a", "3a"}
    assert across <= {p.id for p in shipped.proposals}
    for p, m, f in follows:
        upstream = shipped.proposal_by_id[f.proposal or p.id].milestone_by_id[f.milestone]
        assert upstream.due + f.lag <= m.due, (p.id, m.id)


def test_every_place_may_report_on_every_proposal(shipped: Catalogue) -> None:
    for proposal in shipped.proposals:
        assert set(AUTHORITIES) <= set(proposal.partners), proposal.id


# --- broken catalogues -----------------------------------------------------------------

Raw = dict[str, Any]


def _by_id(items: list[dict[str, Any]], ident: object) -> dict[str, Any]:
    return next(item for item in items if item["id"] == ident)


def _proposal(raw: Raw, ident: str) -> dict[str, Any]:
    return _by_id(raw["proposals"], ident)


def _kpi(raw: Raw, ident: str) -> dict[str, Any]:
    return _by_id(raw["kpis"], ident)


def _column(raw: Raw, ident: str) -> dict[str, Any]:
    return _by_id(raw["columns"], ident)


def _milestone(raw: Raw, proposal: str, ident: str) -> dict[str, Any]:
    return _by_id(_proposal(raw, proposal)["milestones"], ident)


def _append_copy(items: list[dict[str, Any]], ident: object) -> None:
    items.append(copy.deepcopy(_by_id(items, ident)))


BROKEN: list[tuple[str, Callable[[Raw], object], list[str]]] = [
    (
        "duplicate column",
        lambda r: _column(r, "devolution").update(id="collaboration"),
        ["columns: duplicate id 'collaboration'"],
    ),
    (
        "duplicate proposal",
        lambda r: _append_copy(r["proposals"], "1a"),
        ["proposals: duplicate id '1a'"],
    ),
    (
        "duplicate kpi",
        lambda r: _append_copy(r["kpis"], "exports"),
        ["kpis: duplicate id 'exports'"],
    ),
    (
        "duplicate authority",
        lambda r: _append_copy(r["authorities"], "np11"),
        ["authorities: duplicate id 'np11'"],
    ),
    (
        "duplicate priority",
        lambda r: _append_copy(r["priorities"], 2),
        ["priorities: duplicate id 2"],
    ),
    (
        "duplicate milestone",
        lambda r: _milestone(r, "1a", "cluster-evidence").update(id="joint-position"),
        ["proposals[1a].milestones: duplicate id 'joint-position'"],
    ),
    (
        "proposal in no column",
        lambda r: _column(r, "business")["proposals"].remove("3b"),
        ["proposals[3b]: in no column"],
    ),
    (
        "proposal in two columns",
        lambda r: _column(r, "collaboration")["proposals"].append("3b"),
        ["proposals[3b]: in more than one column (collaboration, business)"],
    ),
    (
        "column names an unknown proposal",
        lambda r: _column(r, "business")["proposals"].append("9z"),
        ["columns[business].proposals: unknown proposal '9z'"],
    ),
    (
        "milestones out of date order",
        lambda r: _milestone(r, "1a", "cluster-evidence").update(due=date(2025, 5, 31)),
        [
            "proposals[1a].milestones[cluster-evidence].due: 2025-05-31 is before "
            "joint-position (2025-06-30); milestones must be in date order"
        ],
    ),
    (
        "kpi target on its baseline date",
        lambda r: _kpi(r, "exports")["target"].update(date=date(2022, 12, 31)),
        ["kpis[exports].target.date: 2022-12-31 is not after the baseline date 2022-12-31"],
    ),
    (
        "kpi target before its baseline",
        lambda r: _kpi(r, "life-sciences-jobs")["target"].update(date=date(2019, 12, 31)),
        [
            "kpis[life-sciences-jobs].target.date: 2019-12-31 is not after the baseline "
            "date 2020-12-31"
        ],
    ),
    (
        "partner not a known authority",
        lambda r: _proposal(r, "2a")["partners"].append("atlantis"),
        ["proposals[2a].partners: 'atlantis' is not a known authority"],
    ),
    (
        "reporter not a known authority",
        lambda r: _kpi(r, "exports")["reporters"].append("atlantis"),
        ["kpis[exports].reporters: 'atlantis' is not a known authority"],
    ),
    (
        "unknown evidenced proposal",
        lambda r: _kpi(r, "exports")["evidences"].append("9z"),
        ["kpis[exports].evidences: unknown proposal '9z'"],
    ),
    (
        "bad duration text",
        lambda r: _proposal(r, "1a").update(stall_threshold="thirty days"),
        [
            "proposals[1a].stall_threshold: 'thirty days' is not a duration: use a number "
            "and a unit of w, d, h, m or s"
        ],
    ),
    (
        "zero duration",
        lambda r: _proposal(r, "1a").update(stall_threshold="0d"),
        ["proposals[1a].stall_threshold: '0d' must be longer than zero"],
    ),
    (
        "negative duration in seconds",
        lambda r: _proposal(r, "2b").update(overdue_grace=-1),
        ["proposals[2b].overdue_grace: -1 must be longer than zero"],
    ),
    (
        "missing column title",
        lambda r: _column(r, "collaboration").pop("title"),
        ["columns[collaboration].title: Field required"],
    ),
    (
        "missing milestone due date",
        lambda r: _milestone(r, "1a", "joint-position").pop("due"),
        ["proposals[1a].milestones[joint-position].due: Field required"],
    ),
    ("missing kpis", lambda r: r.pop("kpis"), ["kpis: Field required"]),
    (
        "proposal without a priority",
        lambda r: _proposal(r, "2a").pop("priority"),
        ["proposals[2a].priority: a proposal must name its policy priority"],
    ),
    (
        "unknown priority",
        lambda r: _proposal(r, "2a").update(priority=9),
        ["proposals[2a].priority: unknown priority 9"],
    ),
    (
        "compound trajectory from zero",
        lambda r: _kpi(r, "rd-boost-gva").update(shape="compound"),
        ["kpis[rd-boost-gva].shape: a compound trajectory needs positive values"],
    ),
    (
        "unknown field",
        lambda r: _column(r, "collaboration").update(colour="red"),
        ["columns[collaboration].colour: Extra inputs are not permitted"],
    ),
    (
        "id that is not a subject token",
        lambda r: _by_id(r["authorities"], "np11").update(id="NP 11"),
        ["authorities[NP 11].id: String should match pattern '^[a-z0-9][a-z0-9-]{0,62}$'"],
    ),
    (
        "proposal without milestones",
        lambda r: _proposal(r, "3a").update(milestones=[]),
        ["proposals[3a].milestones: List should have at least 1 item after validation, not 0"],
    ),
    (
        "follows an unknown milestone",
        lambda r: _milestone(r, "1a", "pilot-agreement").update(
            follows=[{"milestone": "spending-review-case"}, {"proposal": "9z", "milestone": "x"}]
        ),
        ["proposals[1a].milestones[pilot-agreement].follows: unknown milestone 9z/x"],
    ),
    (
        "follows an unknown milestone of its own proposal",
        lambda r: _milestone(r, "2b", "partner-forum").update(follows=[{"milestone": "nope"}]),
        ["proposals[2b].milestones[partner-forum].follows: unknown milestone 2b/nope"],
    ),
    (
        "follows itself",
        lambda r: _milestone(r, "3a", "first-mission").update(
            follows=[{"milestone": "first-mission"}]
        ),
        ["proposals[3a].milestones[first-mission].follows: 3a/first-mission follows itself"],
    ),
    (
        "dependency cycle across proposals",
        lambda r: _milestone(r, "3b", "network-terms").update(
            follows=[{"proposal": "1a", "milestone": "cluster-evidence", "lag": "7d"}]
        ),
        [
            "proposals[1a].milestones[cluster-evidence].follows: dependency cycle "
            "1a/cluster-evidence -> 3b/network-terms -> 1a/cluster-evidence"
        ],
    ),
    (
        "unknown reporting frequency",
        lambda r: _kpi(r, "exports")["returns"].update(frequency="weekly"),
        ["kpis[exports].returns.frequency: Input should be 'monthly', 'quarterly' or 'annual'"],
    ),
    (
        "negative due delay",
        lambda r: _proposal(r, "2b")["updates"].update(due_days=-1),
        ["proposals[2b].updates.due_days: Input should be greater than or equal to 0"],
    ),
    (
        "reporter window that ends before it starts",
        lambda r: _kpi(r, "exports")["returns"].update(
            windows=[{"authority": "cumbria", "since": "2026-04-01", "until": "2026-03-31"}]
        ),
        [
            "kpis[exports].returns.windows[cumbria].until: 2026-03-31 is before its since "
            "date 2026-04-01"
        ],
    ),
    (
        "reporter window of an authority that is not a reporter",
        lambda r: _kpi(r, "early-stage-finance")["returns"].update(
            windows=[{"authority": "cumbria", "until": "2026-03-31"}]
        ),
        [
            "kpis[early-stage-finance].returns.windows[cumbria]: 'cumbria' does not owe these "
            "returns (they are owed by northern-gritstone, northern-universities)"
        ],
    ),
    (
        "progress updates owed by an authority that is not a partner",
        lambda r: _proposal(r, "prevention")["updates"].update(by=["innovate-uk"]),
        ["proposals[prevention].updates.by: 'innovate-uk' is not a partner of prevention"],
    ),
    (
        "lag that is not a duration",
        lambda r: _milestone(r, "2b", "partner-forum").update(
            follows=[{"milestone": "finance-gap-analysis", "lag": "soon"}]
        ),
        [
            "proposals[2b].milestones[partner-forum].follows[0].lag: 'soon' is not a duration: "
            "use a number and a unit of w, d, h, m or s"
        ],
    ),
]


@pytest.fixture(scope="module")
def shipped_raw() -> Raw:
    raw = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def _write(tmp_path: Path, raw: Raw) -> Path:
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_the_shipped_yaml_round_trips_through_the_test_writer(
    tmp_path: Path, shipped_raw: Raw
) -> None:
    # Without this, a mutation case could pass because the writer broke the file.
    assert check_catalogue(_write(tmp_path, copy.deepcopy(shipped_raw)))[1] == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(mutate, expected, id=name) for name, mutate, expected in BROKEN],
)
def test_broken_catalogue_is_refused_with_the_place_named(
    tmp_path: Path, shipped_raw: Raw, mutate: Callable[[Raw], object], expected: list[str]
) -> None:
    raw = copy.deepcopy(shipped_raw)
    mutate(raw)
    path = _write(tmp_path, raw)

    catalogue, problems = check_catalogue(path)

    assert catalogue is None
    assert problems == expected
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    assert caught.value.problems == expected
    assert caught.value.source == str(path)


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path, shipped_raw: Raw) -> None:
    raw = copy.deepcopy(shipped_raw)
    _column(raw, "business")["proposals"].remove("3b")
    _proposal(raw, "2a")["partners"].append("atlantis")
    _kpi(raw, "exports")["reporters"].append("atlantis")

    assert check_catalogue(_write(tmp_path, raw))[1] == [
        "proposals[2a].partners: 'atlantis' is not a known authority",
        "proposals[3b]: in no column",
        "kpis[exports].reporters: 'atlantis' is not a known authority",
    ]


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text("columns: [unclosed\n", encoding="utf-8")
    catalogue, problems = check_catalogue(path)
    assert catalogue is None
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: not valid YAML: ")


def test_a_catalogue_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    assert check_catalogue(path) == (
        None,
        [f"{path}: the catalogue must be a mapping at the top level"],
    )


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert check_catalogue(path) == (None, [f"{path}: cannot read: No such file or directory"])
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(path)


def test_load_catalogue_follows_the_environment(
    tmp_path: Path, shipped_raw: Raw, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = copy.deepcopy(shipped_raw)
    raw["programme"] = "Renamed"
    monkeypatch.setenv(CATALOGUE_ENV, str(_write(tmp_path, raw)))
    assert load_catalogue().programme == "Renamed"
    assert load_catalogue(DEFAULT_CATALOGUE).programme != "Renamed"


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90s", timedelta(seconds=90)),
        ("1d12h", timedelta(hours=36)),
        ("2w", timedelta(weeks=2)),
        ("15m", timedelta(minutes=15)),
        ("1.5h", timedelta(minutes=90)),
        (" 1D 12H ", timedelta(hours=36)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is not a duration"),
        ("thirty days", "is not a duration"),
        ("30", "is not a duration"),
        ("d", "is not a duration"),
        ("30x", "is not a duration"),
        ("-1d", "is not a duration"),
        ("1d-2h", "is not a duration"),
        ("1e3s", "is not a duration"),
        ("0d", "must be longer than zero"),
        ("0h0m", "must be longer than zero"),
        ("99999999999999w", "is too long"),
    ],
)
def test_parse_duration_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "shortest"),
    [("30d", "30d"), ("12h", "12h"), ("90s", "90s"), ("1d12h", "36h"), ("14d", "2w")],
)
def test_format_duration_is_the_shortest_exact_text(text: str, shortest: str) -> None:
    assert format_duration(parse_duration(text)) == shortest
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)


def test_duration_field_takes_text_or_seconds() -> None:
    assert DURATION.validate_python("45d") == timedelta(days=45)
    assert DURATION.validate_python(90) == timedelta(seconds=90)
    assert DURATION.dump_python(timedelta(days=45), mode="json") == "45d"


@pytest.mark.parametrize("value", [0, -1, -0.5, True, float("nan"), float("inf"), 1e20])
def test_duration_field_refuses_what_is_not_a_positive_duration(value: object) -> None:
    with pytest.raises(ValidationError):
        DURATION.validate_python(value)
