"""The live board's JSON made of kept parts (``board.ProgrammeEncoder``) is byte for byte
the board's document serialised whole, and its ``/metrics`` gauges made of kept lines
(``gauges.GaugeEncoder``) the gauges rendered whole, at every step of a random history:
ratings kept up to date by ``rerate`` (whose untouched records the encoders reuse),
completions verified and unverified, KPI returns approved."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic_core import to_json
from test_incremental_health import History, generated_catalogue

from services.aggregator.board import LIVE, Locks, ProgrammeEncoder, programme_document
from services.aggregator.gauges import (
    GaugeEncoder,
    approval_gauge,
    programme_gauges,
    render_gauges,
)
from shared.catalogue import Catalogue, load_catalogue
from shared.health import ProgrammeState, changed_state, programme_health, rerate, valid_until
from shared.reviews import Review, kpi_target, milestone_target

STEPS = 150


def random_locks(state: ProgrammeState, rnd: random.Random, locks: Locks) -> Locks:
    """Now and then a completion verified or a lock lifted, a KPI return approved."""
    out = dict(locks)
    done = [k for k, s in state.milestones.items() if s.status == "completed"]
    at = datetime(2025, 1, 1, tzinfo=UTC)
    if done and rnd.random() < 0.3:
        proposal, milestone = rnd.choice(done)
        target = milestone_target(proposal, milestone)
        if out.pop(target, None) is None:
            out[target] = Review(target, "verify", 1, "office/alice", "r", at)
    observations = [o for os in state.kpi_observations.values() for o in os]
    if observations and rnd.random() < 0.3:
        o = rnd.choice(observations)
        target = kpi_target(o.kpi, o.period, o.source)
        out[target] = Review(target, "approve", 2, "office/alice", "r2", at)
    return out


def run(catalogue: Catalogue, seed: int) -> int:
    rnd = random.Random(seed)
    history = History(catalogue, rnd, datetime(2025, 2, 20, 9, 30, tzinfo=UTC))
    state = ProgrammeState()
    health = programme_health(catalogue, state, history.now)
    holds_until = valid_until(catalogue, state, history.now)
    encoder = ProgrammeEncoder(catalogue)
    gauges = GaugeEncoder(catalogue)
    locks: Locks = {}
    tags: dict[str, bytes] = {}
    for step in range(STEPS):
        milestones, observations = history.step((0, 1, 1, 2), 0.3, holds_until)
        state, touched = changed_state(state, milestones, observations)
        health = rerate(catalogue, health, state, touched, history.now, holds_until=holds_until)
        holds_until = valid_until(catalogue, state, history.now)
        locks = random_locks(state, rnd, locks)
        whole = to_json(programme_document(catalogue, health, LIVE, locks))
        body, tag = encoder.encode_tagged(health, LIVE, locks)
        assert body == whole, f"seed {seed}, step {step}"
        # The tag of kept parts is a new encoder's (another replica's), one tag per body.
        assert ProgrammeEncoder(catalogue).encode_tagged(health, LIVE, locks) == (body, tag)
        assert tags.setdefault(tag, body) == body, f"seed {seed}, step {step}: a tag reused"
        whole_gauges = [
            *programme_gauges(catalogue, health),
            approval_gauge(catalogue, health, locks),
        ]
        assert gauges.render(health, locks) == render_gauges(whole_gauges), f"seed {seed}, {step}"
    assert len(set(tags.values())) > STEPS / 2  # the history did change the board
    return len(catalogue.proposals)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_shipped_board_from_kept_parts_is_the_whole_board(seed: int) -> None:
    run(load_catalogue(), seed)


@pytest.mark.parametrize("seed", [11, 12])
def test_a_generated_board_from_kept_parts_is_the_whole_board(seed: int) -> None:
    run(generated_catalogue(random.Random(seed)), seed)


def test_an_untouched_proposal_is_not_encoded_again() -> None:
    catalogue = load_catalogue()
    now = datetime(2025, 6, 1, tzinfo=UTC)
    health = programme_health(catalogue, ProgrammeState(), now)
    encoder = ProgrammeEncoder(catalogue)
    first = encoder.encode(health)
    kept = {p: part for p, (_, _, part, _) in encoder._parts.items()}
    milestones = {k: part for k, (_, _, part) in encoder._milestones.items()}
    assert encoder.encode(health) == first
    assert all(encoder._parts[p][2] is part for p, part in kept.items())  # the same objects
    # A proposal rated again with one milestone changed makes that milestone's part again.
    again = programme_health(catalogue, ProgrammeState(), now + timedelta(days=400))
    assert encoder.encode(again) == to_json(programme_document(catalogue, again))
    remade = [k for k, (_, _, part) in encoder._milestones.items() if part is not milestones[k]]
    assert remade and len(remade) < len(milestones)
