"""Sizes of a run and the resources figures share within one bench invocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.drain import preload
from bench.harness import Bench
from bench.results import Results
from bench.workload import Message, mixed_events
from shared.catalogue import Catalogue, load_catalogue
from shared.natsserver import NatsServer, free_port


@dataclass(frozen=True)
class Sizes:
    """How much each figure does; ``quick`` is a smoke test, not a measurement."""

    runs: int = 3
    raw_events: int = 20_000
    rate: float = 500.0
    latency_seconds: float = 10.0
    drain_events: int = 200_000
    memory_checkpoint: int = 50_000
    ingest_events: int = 20_000
    ingest_clients: int = 4
    e2e_events: int = 15_000
    e2e_rate: float = 100.0
    e2e_latency_seconds: float = 10.0
    scale_proposals: int = 1000
    scale_milestones_per_proposal: int = 10
    scale_events: int = 1_000_000
    read_requests: int = 50
    design_requests: int = 200
    reporting_authorities: int = 100
    reporting_kpis: int = 100
    reporting_years: int = 5
    status_proposals: int = 200

    @classmethod
    def quick(cls, runs: int = 1) -> Sizes:
        return cls(
            runs=runs,
            raw_events=2_000,
            latency_seconds=1.0,
            drain_events=4_000,
            memory_checkpoint=1_000,
            ingest_events=2_000,
            e2e_events=1_500,
            e2e_latency_seconds=1.0,
            scale_proposals=50,
            scale_milestones_per_proposal=4,
            scale_events=20_000,
            read_requests=5,
            design_requests=5,
            reporting_authorities=10,
            reporting_kpis=10,
            reporting_years=1,
            status_proposals=50,
        )


@dataclass
class Context:
    """One bench invocation: its sizes, its results, and the stream figures share."""

    bench: Bench
    sizes: Sizes
    results: Results = field(default_factory=Results)
    catalogue: Catalogue = field(default_factory=load_catalogue)
    steps: set[str] = field(default_factory=set)
    """The steps this invocation runs: a step that measures another's baseline in each of its
    runs (interleaved, so a change of machine load hits both alike) makes that one skip."""
    _drain: tuple[NatsServer, list[Message]] | None = None

    async def drain_stream(self) -> NatsServer:
        """A nats-server whose events stream holds ``drain_events`` mixed events (made once)."""
        if self._drain is None:
            messages = mixed_events(self.catalogue, self.sizes.drain_events, seed=7)
            server = NatsServer(store_dir=self.bench.path("drain-nats"), port=free_port())
            await preload(server, messages)
            self.bench.stack.callback(server.stop)
            self._drain = (server, messages)
        return self._drain[0]

    def workdir(self, name: str) -> Path:
        return self.bench.path(name)
