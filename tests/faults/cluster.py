"""The shipped three-node JetStream cluster (deploy/nats/cluster/), run on loopback.

The deployment's node files are rendered for loopback by substitution only: their include
is inlined, and compose's hosts, ports and volume paths become 127.0.0.1, free ports and
the test's own directories. Each substitution must match exactly once, so a change to the
shipped files that this rendering does not understand fails loudly instead of testing
something else. The loopback run leaves out the ``authorization`` block (the services'
users, tested on one node by tests/security): this cluster is about replication and
fail-over.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.natsserver import free_port, nats_server_binary

from .procs import REPO

CLUSTER_DIR = REPO / "deploy" / "nats" / "cluster"
# Node name -> the compose service (and host name) that runs it.
NODES = {"n1": "nats", "n2": "nats-2", "n3": "nats-3"}
CLIENT_PORT, ROUTE_PORT, HTTP_PORT = 4222, 6222, 8222
STORE_DIR = "/data/jetstream"
INCLUDE = re.compile(r'^include\s+"([^"]+)"\s*$', re.MULTILINE)


def node_file(node: str) -> Path:
    return CLUSTER_DIR / f"{node}.conf"


def inlined(path: Path) -> str:
    """The configuration of ``path`` with its includes inlined (as nats-server reads it)."""
    text = path.read_text()
    return INCLUDE.sub(lambda m: inlined((path.parent / m.group(1)).resolve()), text)


def without_block(text: str, name: str) -> str:
    """``text`` without the top-level ``name { ... }`` block, if there is one."""
    start = re.search(rf"^{name}\s*[{{]", text, re.MULTILINE)
    if start is None:
        return text
    depth, i = 0, start.end() - 1
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
        if depth == 0:
            return text[: start.start()] + text[i:]


@dataclass(frozen=True)
class Ports:
    client: int
    route: int
    http: int


def substitute(text: str, old: str, new: str) -> str:
    """Replace ``old`` by ``new``, which must occur exactly once."""
    count = text.count(old)
    if count != 1:
        raise ValueError(f"{old!r} occurs {count} times in the node configuration, not once")
    return text.replace(old, new)


def loopback_config(node: str, ports: dict[str, Ports], store_dir: Path) -> str:
    """Node ``node``'s shipped configuration, rendered for loopback."""
    own = ports[node]
    text = without_block(inlined(node_file(node)), "authorization")
    text = substitute(text, f"listen: 0.0.0.0:{CLIENT_PORT}", f"listen: 127.0.0.1:{own.client}")
    text = substitute(text, f"http: 0.0.0.0:{HTTP_PORT}", f"http: 127.0.0.1:{own.http}")
    text = substitute(text, f"listen: 0.0.0.0:{ROUTE_PORT}", f"listen: 127.0.0.1:{own.route}")
    text = substitute(text, f"store_dir: {STORE_DIR}", f'store_dir: "{store_dir}"')
    for other, host in NODES.items():
        text = substitute(
            text,
            f"nats-route://{host}:{ROUTE_PORT}",
            f"nats-route://127.0.0.1:{ports[other].route}",
        )
    return text


@dataclass
class NatsCluster:
    """Three nats-server processes from the wheel, each with its own store, on loopback."""

    root: Path
    ports: dict[str, Ports] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, node: str) -> str:
        return f"nats://127.0.0.1:{self.ports[node].client}"

    def urls(self, *, but: str | None = None) -> list[str]:
        return [self.url(node) for node in NODES if node != but]

    async def start(self, within: float = 30) -> NatsCluster:
        """Start the three nodes; return once each reports JetStream healthy."""
        self.ports = {node: Ports(free_port(), free_port(), free_port()) for node in NODES}
        for node in NODES:
            self.processes[node] = self._launch(node)
        async with asyncio.timeout(within):
            await asyncio.gather(*(self._healthy(node) for node in NODES))
        return self

    def _launch(self, node: str) -> subprocess.Popen[bytes]:
        directory = self.root / node
        directory.mkdir(parents=True)
        conf = directory / "nats-server.conf"
        conf.write_text(loopback_config(node, self.ports, directory / "jetstream"))
        with open(directory / "nats-server.log", "ab") as log:
            return subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )

    async def _healthy(self, node: str) -> None:
        # /healthz answers 200 once the node's JetStream is up and current with the cluster.
        url = f"http://127.0.0.1:{self.ports[node].http}/healthz"
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)

    def kill(self, node: str) -> None:
        """SIGKILL one node."""
        process = self.processes[node]
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
