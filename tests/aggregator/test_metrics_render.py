"""The programme gauges' own renderer writes what prometheus_client would, byte for byte."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from services.aggregator.metrics import Gauge, render_gauges


class _Families(Collector):
    def __init__(self, gauges: list[Gauge]) -> None:
        self._gauges = gauges

    def collect(self):  # type: ignore[no-untyped-def]
        return [g.family() for g in self._gauges]


def test_render_gauges_matches_generate_latest() -> None:
    odd = Gauge("cotn_test_odd", "Help with a \\ backslash\nand a newline", ["zeta", "alpha"])
    odd.add_metric(['quote " here', "back\\slash"], 1)
    odd.add_metric(["new\nline", "plain"], 0.5)
    odd.add_metric(["big", "neg"], -1e21)
    odd.add_metric(["nan", "inf"], float("inf"))
    ints = Gauge("cotn_test_ints", "Small and large ints", ["kpi"])
    for n in (0, 1, 2, 255, 256, 10**9):
        ints.add_metric([f"k{n}"], n)
    bare = Gauge("cotn_test_bare", "No labels", [])
    bare.add_metric([], 3.25)
    gauges = [odd, ints, bare]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(gauges))
    assert render_gauges(gauges) == generate_latest(registry)
