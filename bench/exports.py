"""Figure 8: the returns upwards at scale: the IATI 2.03 document and the GMPP-style
quarterly return (CSV) beside the as-at board of the same instant, in the same run.

The programme and its log are those of figures 5 and 6 (``scale_proposals`` proposals, ten
milestones each, ``scale_events`` events over 2025, stored set-wise), filled afresh so the
figure runs on its own. Each export reads the as-at state the board reads, then every KPI
report up to the instant, the locks of what it shows and the returns received, and builds
its document: the as-at board's p99 is the baseline.
"""

from __future__ import annotations

from bench.context import Context
from bench.harness import percentile
from bench.results import Spec
from bench.scale import _fill, _get, _settled
from bench.workload import Scale, write_catalogue
from services.aggregator.db import upgrade

AS_AT = "2025-06-30T23:59:59Z"
"""The end of 2025-Q2: about half-way through the generated log (2025-01-01 on)."""
QUARTER = "2025-Q2"

BOARD_P50 = Spec("exports_board_p50", "8 GET /v1/programme?as_at= p50 at scale", "ms")
BOARD_P99 = Spec("exports_board_p99", "8 GET /v1/programme?as_at= p99 at scale", "ms")
IATI_P50 = Spec(
    "iati_p50", "8 GET /v1/exports/iati-activities.xml p50", "ms", baseline="exports_board_p50"
)
IATI_P99 = Spec(
    "iati_p99", "8 GET /v1/exports/iati-activities.xml p99", "ms", baseline="exports_board_p99"
)
GMPP_P50 = Spec("gmpp_p50", "8 GET /v1/exports/gmpp.csv p50", "ms", baseline="exports_board_p50")
GMPP_P99 = Spec("gmpp_p99", "8 GET /v1/exports/gmpp.csv p99", "ms", baseline="exports_board_p99")


async def exports(ctx: Context) -> None:
    sizes = ctx.sizes
    shape = Scale(
        proposals=sizes.scale_proposals,
        milestones_per_proposal=sizes.scale_milestones_per_proposal,
        columns=min(10, sizes.scale_proposals),
    )
    path, catalogue = write_catalogue(shape, ctx.workdir("exports-catalogue"))
    # The exports take seconds each at scale: a tenth of the read requests, at least five.
    requests = max(5, sizes.read_requests // 10)
    async with ctx.bench.postgres() as url:
        await upgrade(url)
        setup = await _fill(url, shape, sizes.scale_events)
        ctx.results.detail("exports", {"proposals": len(catalogue.proposals), **setup})
        for _ in range(sizes.runs):
            async with ctx.bench.nats() as server:
                async with ctx.bench.aggregator(server.url, url, catalogue=path) as agg:
                    await _settled(url, len(catalogue.proposals))
                    board = await _get(agg.url, f"/v1/programme?as_at={AS_AT}", requests)
                    iati = await _get(
                        agg.url, f"/v1/exports/iati-activities.xml?as_at={AS_AT}", requests
                    )
                    gmpp = await _get(agg.url, f"/v1/exports/gmpp.csv?quarter={QUARTER}", requests)
            for (p50, p99), values in (
                ((BOARD_P50, BOARD_P99), board),
                ((IATI_P50, IATI_P99), iati),
                ((GMPP_P50, GMPP_P99), gmpp),
            ):
                ctx.results.add(p50, percentile(values, 0.5) * 1000)
                ctx.results.add(p99, percentile(values, 0.99) * 1000)
