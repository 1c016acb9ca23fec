"""Figure 6: history at scale: the board as at a past instant beside the live board, one
proposal's history, and ``/v1/changes`` over a year, with the aggregator's memory.

The programme and its log are those of figure 5 (``scale_proposals`` proposals, ten
milestones each, ``scale_events`` events over 2025, stored set-wise), filled afresh so the
figure runs on its own. The live board is measured in the same run as its baseline.
"""

from __future__ import annotations

from bench.context import Context
from bench.harness import percentile
from bench.results import Goal, Spec
from bench.scale import _fill, _get, _settled
from bench.workload import Scale, write_catalogue
from services.aggregator.db import upgrade

LIVE_P50 = Spec("history_live_p50", "6 GET /v1/programme (live) p50 at scale", "ms")
LIVE_P99 = Spec("history_live_p99", "6 GET /v1/programme (live) p99 at scale", "ms")
AS_AT_P50 = Spec(
    "as_at_p50", "6 GET /v1/programme?as_at= p50 at scale", "ms", baseline="history_live_p50"
)
AS_AT_P99 = Spec(
    "as_at_p99",
    "6 GET /v1/programme?as_at= p99 at scale",
    "ms",
    baseline="history_live_p99",
    goal=Goal("ratio_at_most", 3.0),
)
KNOWN_AT_P99 = Spec(
    "known_at_p99",
    "6 GET /v1/programme?as_at=&known_at= p99 at scale",
    "ms",
    baseline="history_live_p99",
)
HISTORY_P50 = Spec("history_p50", "6 GET /v1/proposals/{id}/history p50 at scale", "ms")
HISTORY_P99 = Spec("history_p99", "6 GET /v1/proposals/{id}/history p99 at scale", "ms")
CHANGES_P50 = Spec("changes_p50", "6 GET /v1/changes over a year p50 at scale", "ms")
CHANGES_P99 = Spec("changes_p99", "6 GET /v1/changes over a year p99 at scale", "ms")
RSS_BEFORE = Spec("history_rss_before", "6 aggregator RSS after the live reads", "MiB")
RSS_AFTER = Spec(
    "history_rss_after",
    "6 aggregator RSS after the history reads",
    "MiB",
    baseline="history_rss_before",
    goal=Goal("ratio_at_most", 1.5),
)

AS_AT = "2025-05-01T00:00:00Z"
"""About half-way through the generated log (2025-01-01 on, one event per 20 s)."""
KNOWN_AT = "2025-04-01T00:00:00Z"
YEAR = "from=2025-03-01T00:00:00Z&to=2026-03-01T00:00:00Z"


async def history(ctx: Context) -> None:
    sizes = ctx.sizes
    shape = Scale(
        proposals=sizes.scale_proposals,
        milestones_per_proposal=sizes.scale_milestones_per_proposal,
        columns=min(10, sizes.scale_proposals),
    )
    path, catalogue = write_catalogue(shape, ctx.workdir("history-catalogue"))
    requests = sizes.read_requests
    async with ctx.bench.postgres() as url:
        await upgrade(url)
        setup = await _fill(url, shape, sizes.scale_events)
        ctx.results.detail("history", {"proposals": len(catalogue.proposals), **setup})
        one = catalogue.proposals[len(catalogue.proposals) // 2].id
        for _ in range(sizes.runs):
            async with ctx.bench.nats() as server:
                async with ctx.bench.aggregator(server.url, url, catalogue=path) as agg:
                    await _settled(url, len(catalogue.proposals))
                    # Interleaved, so both boards see the same state of the machine.
                    live: list[float] = []
                    as_at: list[float] = []
                    for _ in range(max(1, requests // 10)):
                        live += await _get(agg.url, "/v1/programme", 10)
                        as_at += await _get(agg.url, f"/v1/programme?as_at={AS_AT}", 10)
                    before = agg.rss_mib()
                    known = await _get(
                        agg.url, f"/v1/programme?as_at={AS_AT}&known_at={KNOWN_AT}", requests
                    )
                    timeline = await _get(agg.url, f"/v1/proposals/{one}/history", requests)
                    changes = await _get(agg.url, f"/v1/changes?{YEAR}", max(5, requests // 5))
                    after = agg.rss_mib()
            for specs, values in (
                ((LIVE_P50, LIVE_P99), live),
                ((AS_AT_P50, AS_AT_P99), as_at),
                ((None, KNOWN_AT_P99), known),
                ((HISTORY_P50, HISTORY_P99), timeline),
                ((CHANGES_P50, CHANGES_P99), changes),
            ):
                if specs[0] is not None:
                    ctx.results.add(specs[0], percentile(values, 0.5) * 1000)
                ctx.results.add(specs[1], percentile(values, 0.99) * 1000)
            if before is not None and after is not None:
                ctx.results.add(RSS_BEFORE, before)
                ctx.results.add(RSS_AFTER, after)
