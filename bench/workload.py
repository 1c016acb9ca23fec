"""What the bench sends and stores: events for the shipped catalogue, a generated large
catalogue, and a million stored events made set-wise in PostgreSQL.

Everything is deterministic (seeded), so two runs measure the same work.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from shared.bus import event_subject, msg_id
from shared.catalogue import Catalogue, check_catalogue

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SPAN_SECONDS = 20_000_000  # about 230 days after T0: every event time is in the past
MILESTONE = "org.cotn.milestone.v1"
KPI = "org.cotn.kpi.v1"
STATUSES = ("in_progress", "at_risk", "completed", "blocked", "not_started")


@dataclass(frozen=True, slots=True)
class Message:
    """One event as a column service publishes it."""

    subject: str
    msg_id: str
    payload: bytes
    event: dict[str, Any]


def _event(event_id: str, source: str, kind: str, when: datetime, data: dict[str, Any]) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": kind,
        "time": when.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def mixed_events(catalogue: Catalogue, n: int, *, seed: int = 1, tag: str = "") -> list[Message]:
    """``n`` events over the whole programme: 80 % milestone updates, 20 % KPI reports."""
    rng = random.Random(seed)
    tag = tag or uuid.uuid4().hex[:8]
    milestones = [(p, m) for p in catalogue.proposals for m in p.milestones]
    out = []
    data: dict[str, Any]
    for i in range(n):
        when = T0 + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        event_id = f"bench-{tag}-{i}"
        if i % 5:
            proposal, m = rng.choice(milestones)
            data = {"proposal": proposal.id, "milestone": m.id, "status": rng.choice(STATUSES)}
            source, kind, kind_token, filed = (
                proposal.partners[0],
                MILESTONE,
                "milestone",
                proposal.id,
            )
        else:
            kpi = rng.choice(catalogue.kpis)
            period = f"{2017 + i % 8}-Q{1 + i % 4}"  # all begun before T0
            data = {"kpi": kpi.id, "value": round(rng.uniform(1, 1000), 3), "period": period}
            source, kind, kind_token, filed = kpi.reporters[0], KPI, "kpi", kpi.evidences[0]
        event = _event(event_id, source, kind, when, data)
        subject = event_subject(catalogue.column_of[filed], filed, kind_token)
        out.append(Message(subject, msg_id(source, event_id), json.dumps(event).encode(), event))
    return out


def column_events(
    catalogue: Catalogue, column: str, source: str, n: int, *, seed: int = 2, tag: str = ""
) -> list[Message]:
    """``n`` events that ``source`` may send to ``column``'s service (milestones and KPIs)."""
    rng = random.Random(seed)
    tag = tag or uuid.uuid4().hex[:8]
    milestones = [
        (p, m) for p in catalogue.proposals_of(column) if source in p.partners for m in p.milestones
    ]
    kpis = [
        (k, next(p for p in k.evidences if catalogue.column_of[p] == column))
        for k in catalogue.kpis
        if source in k.reporters and any(catalogue.column_of[p] == column for p in k.evidences)
    ]
    out = []
    data: dict[str, Any]
    for i in range(n):
        when = T0 + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        event_id = f"bench-{tag}-{i}"
        if kpis and i % 5 == 0:
            kpi, filed = rng.choice(kpis)
            period = f"{2017 + i % 8}-Q{1 + i % 4}"  # all begun before T0
            data = {"kpi": kpi.id, "value": rng.uniform(1, 1000), "period": period}
            kind, kind_token = KPI, "kpi"
        else:
            proposal, m = rng.choice(milestones)
            data = {"proposal": proposal.id, "milestone": m.id, "status": rng.choice(STATUSES)}
            kind, kind_token, filed = MILESTONE, "milestone", proposal.id
        event = _event(event_id, source, kind, when, data)
        subject = event_subject(column, filed, kind_token)
        out.append(Message(subject, msg_id(source, event_id), json.dumps(event).encode(), event))
    return out


def batch_body(messages: list[Message]) -> bytes:
    return json.dumps([m.event for m in messages]).encode()


# --- a large programme -------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """The shape of a generated programme."""

    columns: int = 10
    proposals: int = 1000
    milestones_per_proposal: int = 10
    authorities: int = 20
    kpis: int = 20

    @property
    def milestones(self) -> int:
        return self.proposals * self.milestones_per_proposal

    def column_index(self, proposal_index: int) -> int:
        return proposal_index * self.columns // self.proposals


def proposal_id(i: int) -> str:
    return f"p{i + 1:04d}"


def milestone_id(j: int) -> str:
    return f"m{j + 1:02d}"


def authority_id(a: int) -> str:
    return f"a{a + 1:02d}"


def column_id(c: int) -> str:
    return f"c{c + 1:02d}"


def kpi_id(k: int) -> str:
    return f"k{k + 1:02d}"


def generated_catalogue(scale: Scale) -> dict[str, Any]:
    """A programme of ``scale``, valid against :class:`shared.catalogue.Catalogue`."""
    start = date(2025, 1, 1)
    proposals = [
        {
            "id": proposal_id(i),
            "title": f"Generated proposal {i + 1}",
            "priority": 1 + i % 3,
            "text": f"Generated proposal {i + 1} of the benchmark programme.",
            "partners": [authority_id((i + d) % scale.authorities) for d in range(3)],
            "milestones": [
                {
                    "id": milestone_id(j),
                    "title": f"Milestone {j + 1} of proposal {i + 1}",
                    "due": start + timedelta(days=60 * (j + 1) + i % 30),
                }
                for j in range(scale.milestones_per_proposal)
            ],
            "stall_threshold": "90d",
        }
        for i in range(scale.proposals)
    ]
    columns = [
        {
            "id": column_id(c),
            "title": f"Generated column {c + 1}",
            "proposals": [
                proposal_id(i) for i in range(scale.proposals) if scale.column_index(i) == c
            ],
        }
        for c in range(scale.columns)
    ]
    kpis = [
        {
            "id": kpi_id(k),
            "title": f"Generated KPI {k + 1}",
            "unit": "count",
            "direction": "up",
            "baseline": {"value": 100.0, "date": date(2020, 1, 1)},
            "target": {"value": 200.0, "date": date(2030, 12, 31)},
            "shape": "linear" if k % 2 else "compound",
            "evidences": [proposal_id(i) for i in range(k, scale.proposals, scale.kpis)],
            "reporters": [authority_id(k % scale.authorities)],
            "source": "generated",
        }
        for k in range(scale.kpis)
    ]
    return {
        "programme": "Benchmark programme (generated)",
        "status": "Generated by bench.workload for the read-side scale figures",
        "programme_start": start,
        "columns": columns,
        "priorities": [
            {"id": n, "title": f"Priority {n}", "text": f"Generated priority {n}"}
            for n in (1, 2, 3)
        ],
        "proposals": proposals,
        "kpis": kpis,
        "authorities": [
            {"id": authority_id(a), "name": f"Authority {a + 1}", "kind": "combined_authority"}
            for a in range(scale.authorities)
        ],
    }


def write_catalogue(scale: Scale, directory: Path) -> tuple[Path, Catalogue]:
    """Write the generated programme as YAML and check it as ``cotn catalogue check`` does."""
    path = directory / "catalogue.yaml"
    path.write_text(yaml.safe_dump(generated_catalogue(scale), sort_keys=False), encoding="utf-8")
    catalogue, problems = check_catalogue(path)
    if catalogue is None:
        raise ValueError(f"generated catalogue is invalid: {problems[:3]}")
    return path, catalogue


def _pad(expr: str, width: int) -> str:
    return f"lpad(({expr})::text, {width}, '0')"


def bulk_events_sql(scale: Scale, events: int) -> list[str]:
    """Set-wise SQL that stores ``events`` events of the generated programme in ``event``:
    90 % milestone updates spread over every milestone, 10 % KPI reports."""
    milestone_events = events * 9 // 10
    kpi_events = events - milestone_events
    p = f"(g % {scale.proposals})"
    column = f"'c' || {_pad(f'{p} * {scale.columns} / {scale.proposals} + 1', 2)}"
    milestone = (
        f"'m' || {_pad(f'(g / {scale.proposals}) % {scale.milestones_per_proposal} + 1', 2)}"
    )
    statuses = "ARRAY['in_progress','at_risk','completed','blocked','not_started']"
    when = "timestamptz '2025-01-01 00:00:00+00' + g * interval '20 seconds'"
    milestones = f"""
INSERT INTO event (source, event_id, stream_seq, type, "column", proposal, milestone, kpi,
                   period, target, event_time, received_at, data, digest)
SELECT 'a' || {_pad(f"{p} % {scale.authorities} + 1", 2)}, 'bulk-' || g, g, '{MILESTONE}',
       {column}, 'p' || {_pad(f"{p} + 1", 4)}, {milestone}, NULL,
       to_char({when}, 'YYYY-MM'), 'milestone.p' || {_pad(f"{p} + 1", 4)} || '.' || {milestone},
       {when}, {when},
       jsonb_build_object('proposal', 'p' || {_pad(f"{p} + 1", 4)}, 'milestone', {milestone},
                          'status', ({statuses})[1 + (g / 7) % 5]),
       md5(g::text) || md5((g + 1)::text)
FROM generate_series(1, {milestone_events}) AS g
"""
    k = f"(g % {scale.kpis})"
    period = f"(2017 + (g / {scale.kpis}) % 8)::text || '-Q' || ((g / {8 * scale.kpis}) % 4 + 1)"
    kpis = f"""
INSERT INTO event (source, event_id, stream_seq, type, "column", proposal, milestone, kpi,
                   period, target, event_time, received_at, data, digest)
SELECT 'a' || {_pad(f"{k} % {scale.authorities} + 1", 2)}, 'bulk-kpi-' || g,
       {milestone_events} + g, '{KPI}',
       'c' || {_pad(f"{k} * {scale.columns} / {scale.proposals} + 1", 2)},
       'p' || {_pad(f"{k} + 1", 4)}, NULL, 'k' || {_pad(f"{k} + 1", 2)}, {period},
       'kpi.k' || {_pad(f"{k} + 1", 2)} || '.' || {period} || '.a'
           || {_pad(f"{k} % {scale.authorities} + 1", 2)},
       {when}, {when},
       jsonb_build_object('kpi', 'k' || {_pad(f"{k} + 1", 2)}, 'value', 100 + g % 97,
                          'period', {period}),
       md5(g::text) || md5((g + 2)::text)
FROM generate_series(1, {kpi_events}) AS g
"""
    return [milestones, kpis]


BARE_PROJECTIONS_SQL = [
    "DELETE FROM milestone_state",
    "DELETE FROM kpi_observation",
    f"""
INSERT INTO milestone_state (proposal, milestone, status, event_time, stream_seq, source,
                             event_id, note)
SELECT DISTINCT ON (proposal, milestone) proposal, milestone, data->>'status', event_time,
       stream_seq, source, event_id, data->>'note'
FROM event WHERE type = '{MILESTONE}'
ORDER BY proposal, milestone, event_time DESC, stream_seq DESC
""",
    f"""
INSERT INTO kpi_observation (kpi, period, value, event_time, stream_seq, source, event_id)
SELECT DISTINCT ON (kpi, data->>'period') kpi, data->>'period', (data->>'value')::float8,
       event_time, stream_seq, source, event_id
FROM event WHERE type = '{KPI}'
ORDER BY kpi, data->>'period', event_time DESC, stream_seq DESC
""",
]
"""The projections rebuilt by hand-written SQL: the floor under ``cotn replay``."""
