"""A three-node JetStream cluster (the shipped configuration, on loopback) losing its leader.

The events stream has three replicas. Under load, the node leading the stream is killed
with SIGKILL: the other two elect a new leader, the services reconnect to a node that is
still up (nats-py learns the cluster's other addresses from the server it first reached),
clients retry their 503s, and every acknowledged event is stored once.

The nodes run deploy/nats/cluster/n<i>.conf as shipped, rendered for loopback by
``tests/faults/cluster.py``; the first two tests keep the shipped files in step with each
other and the rendering honest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest

from shared.bus import EVENTS_STREAM
from tests.aggregator.harness import eventually

from .checks import connected, exactly_once
from .cluster import NODES, NatsCluster, Ports, inlined, loopback_config, node_file
from .load import Load
from .procs import Services


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster")
    try:
        yield await nodes.start()
    finally:
        nodes.stop()


def test_the_shipped_nodes_differ_only_in_their_name() -> None:
    first, *others = NODES
    for node in others:
        renamed = node_file(first).read_text().replace(first, node)
        assert node_file(node).read_text() == renamed, f"{node}.conf is out of step with {first}"
    text = inlined(node_file(first))
    assert "sync_interval: always" in text
    # nats-server keeps the last value: the node's name, not the included file's.
    assert text.rindex("server_name:") == text.rindex(f"server_name: {first}")


def test_the_loopback_rendering_leaves_nothing_of_compose(tmp_path: Path) -> None:
    ports = {node: Ports(10001 + i, 10101 + i, 10201 + i) for i, node in enumerate(NODES)}
    for node in NODES:
        text = loopback_config(node, ports, tmp_path)
        settings = "\n".join(line.split("#")[0] for line in text.splitlines())
        for compose_only in ("0.0.0.0", "/data/", "authorization", "$COTN_"):
            assert compose_only not in settings, f"{node}: {compose_only}"
        for host in NODES.values():
            assert f"//{host}:" not in settings, f"{node}: route to {host}"
        assert f"nats-route://127.0.0.1:{ports[node].route}" in settings


@pytest.mark.fault
@pytest.mark.slow
async def test_stream_leader_killed_under_load_stores_every_event_once(
    cluster: NatsCluster, services: Services, pg_url: str
) -> None:
    replicas = {"stream_replicas": 3}
    ingest = await services.ingest(cluster.url("n1"), **replicas)
    await services.aggregator(cluster.url("n2"), pg_url, **replicas)
    load = Load(lambda: ingest.url, services.tokens, "leader", clients=4).start()
    await load.until_acked(400)

    leader = await eventually(lambda: stream_leader(cluster.urls()), "the stream's leader")
    assert leader in NODES
    cluster.kill(leader)
    await load.until_acked(len(load.acked) + 600, within=90)
    load.stop()

    survivors = cluster.urls(but=leader)
    await exactly_once(await load.finished(), pg_url, nats_url=survivors)
    assert await eventually(lambda: stream_leader(survivors), "a new leader") != leader


async def stream_leader(urls: list[str]) -> str | None:
    """The server leading the events stream (which must have three replicas), if any."""
    try:
        async with connected(urls) as nc:
            info = await nc.jetstream(timeout=2).stream_info(EVENTS_STREAM)
    except (nats.errors.Error, TimeoutError):
        return None  # electing
    assert info.config.num_replicas == 3
    return info.cluster.leader if info.cluster else None
