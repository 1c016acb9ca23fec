"""docker-compose.cluster.yml agrees with the repository and with docker-compose.yml.

There is no Docker here: both files are read with PyYAML and merged the way Compose merges
an override (mappings key by key, volumes by their target, ``extends`` from the base file,
``!reset`` and ``!override``), then what the cluster relies on is checked on the result:
the files it mounts, the node configurations and their routes, stream replicas on every
service that sets the streams up, and two aggregators on one PostgreSQL database.
"""

from __future__ import annotations

import copy
import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import CLUSTER_DIR, NODES, ROUTE_PORT
from .procs import REPO

BASE_FILE = REPO / "docker-compose.yml"
CLUSTER_FILE = REPO / "docker-compose.cluster.yml"


class Reset(list):  # type: ignore[type-arg]
    """A value tagged ``!reset``: drop what the base file had."""


class Override(list):  # type: ignore[type-arg]
    """A sequence tagged ``!override``: replace the base file's instead of merging."""


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that knows Compose's ``!reset`` and ``!override`` tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor(
    "!override", lambda loader, node: Override(loader.construct_sequence(node, deep=True))
)


def load(path: Path) -> dict[str, Any]:
    with open(path) as f:
        document: dict[str, Any] = yaml.load(f, Loader=ComposeLoader)
    return document


BASE = load(BASE_FILE)
CLUSTER = load(CLUSTER_FILE)


def volume_target(volume: str) -> str:
    return volume.split(":")[1]


def merge(base: Any, over: Any, key: str = "") -> Any:
    """``over`` applied to ``base`` as Compose applies an override file."""
    if isinstance(over, Reset):
        return None
    if isinstance(over, Override) or base is None:
        return list(over) if isinstance(over, Override) else copy.deepcopy(over)
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for name, value in over.items():
            merged[name] = merge(base.get(name), value, name)
        return {k: v for k, v in merged.items() if v is not None}
    if key == "volumes":
        by_target = {volume_target(v): v for v in base}
        by_target.update({volume_target(v): v for v in over})
        return list(by_target.values())
    if key == "ports":
        return base + [p for p in over if p not in base]
    return copy.deepcopy(over)


def effective(name: str) -> dict[str, Any]:
    """A service of the merged project."""
    over = CLUSTER["services"].get(name, {})
    if "extends" in over:
        extended = over["extends"]
        assert REPO / extended["file"] == BASE_FILE, "extends a file other than the base"
        start = BASE["services"][extended["service"]]
        over = {k: v for k, v in over.items() if k != "extends"}
    else:
        start = BASE["services"].get(name, {})
    result: dict[str, Any] = merge(copy.deepcopy(start), over)
    return result


SERVICES = sorted(set(BASE["services"]) | set(CLUSTER["services"]))
NATS_SERVICES = list(NODES.values())
AGGREGATORS = ["aggregator", "aggregator-2"]
SETS_UP_STREAMS = "nats-setup"
NATS_CLIENTS = [name for name in SERVICES if name.startswith("ingest-")] + AGGREGATORS


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of every ``./`` bind mount."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            mounts[target] = REPO / source
    return mounts


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


@pytest.mark.parametrize("name", SERVICES)
def test_every_mounted_file_exists_and_every_volume_is_declared(name: str) -> None:
    service = effective(name)
    for target, source in bind_mounts(service).items():
        assert source.exists(), f"{name} mounts {source} at {target}: not in the repository"
    declared = {**BASE["volumes"], **CLUSTER.get("volumes", {})}
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if not source.startswith(("./", "/")):
            assert source in declared, f"{name}: volume {source} is not declared"


@pytest.mark.parametrize(("node", "name"), NODES.items())
def test_each_node_runs_its_shipped_configuration(node: str, name: str) -> None:
    service = effective(name)
    mounts = bind_mounts(service)
    flag, config = service["command"]
    assert flag == "-c"
    assert mounts[config] == CLUSTER_DIR / f"{node}.conf"
    text = mounts[config].read_text()
    assert re.search(rf"^server_name: {node}$", text, re.MULTILINE)
    # The include resolves, inside the container, to the repository's single-node file.
    [include] = re.findall(r'^include\s+"([^"]+)"', text, re.MULTILINE)
    inside = posixpath.normpath(posixpath.join(posixpath.dirname(config), include))
    assert mounts[inside] == REPO / "deploy" / "nats" / "nats.conf"
    routes = re.findall(rf"nats-route://([\w-]+):{ROUTE_PORT}", text)
    assert sorted(routes) == sorted(NATS_SERVICES)


def test_each_node_keeps_its_store_on_a_volume_of_its_own() -> None:
    stores = [
        next(v.split(":")[0] for v in effective(name)["volumes"] if volume_target(v) == "/data")
        for name in NATS_SERVICES
    ]
    assert len(set(stores)) == len(NATS_SERVICES), stores


@pytest.mark.parametrize("name", [SETS_UP_STREAMS, *NATS_CLIENTS])
def test_the_streams_get_three_replicas_and_everyone_waits_for_every_node(name: str) -> None:
    service = effective(name)
    # nats-setup reads the aggregator's settings to make the streams and the consumer.
    prefix = "COTN_INGEST_" if name.startswith("ingest-") else "COTN_AGGREGATOR_"
    assert environment(service)[f"{prefix}STREAM_REPLICAS"] == "3"
    for node in NATS_SERVICES:
        assert service["depends_on"][node]["condition"] == "service_healthy", node


def test_two_aggregators_share_one_postgresql_database_and_no_host_port() -> None:
    one, two = (effective(name) for name in AGGREGATORS)
    assert one["command"] == two["command"]
    url = "COTN_AGGREGATOR_DATABASE_URL"
    assert environment(one)[url] == environment(two)[url]
    assert environment(two)[url].startswith("postgresql://")
    assert two["depends_on"]["migrations"]["condition"] == "service_completed_successfully"
    published = [
        port.split(":")[0] for name in SERVICES for port in effective(name).get("ports", [])
    ]
    assert len(published) == len(set(published)), f"a host port is published twice: {published}"


NATS_URL_OF = {SETS_UP_STREAMS: "COTN_NATS_ADMIN_URL"}


@pytest.mark.parametrize("name", [SETS_UP_STREAMS, *NATS_CLIENTS])
def test_every_client_is_given_every_node_as_a_seed_as_its_own_user(name: str) -> None:
    """So a service starts while any one node is down (one seed only: it waits for that one)."""
    prefix = "COTN_INGEST_" if name.startswith("ingest-") else "COTN_AGGREGATOR_"
    variable = NATS_URL_OF.get(name, f"{prefix}NATS_URL")
    seeds = environment(effective(name))[variable].split(",")
    hosts = [re.fullmatch(r"nats://([\w-]+):\S+@([\w-]+):4222", seed) for seed in seeds]
    assert all(hosts), seeds
    assert sorted(h.group(2) for h in hosts if h) == sorted(NATS_SERVICES)
    # The user of the single-node file, on every node.
    base = BASE["services"].get(name) or BASE["services"]["aggregator"]  # aggregator-2 extends it
    [user] = re.findall(r"nats://([\w-]+):", str(base["environment"][variable]).split(",")[0])
    assert {h.group(1) for h in hosts if h} == {user}
