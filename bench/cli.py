"""The bench's command line: choose figures and sizes, run them, print and save the results.

Every figure runs ``--runs`` times (3 by default) and reports its median, min and max, and
its ratio to its baseline measured in the same invocation; ``--only`` adds the baselines a
figure needs. Everything runs on free loopback ports: a nats-server from the wheel per
measurement and a PostgreSQL database per measurement on ``$COTN_BENCH_PG`` (default: the
machine's server), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import design, exports, figures, history, reporting, scale
from bench.context import Context, Sizes
from bench.harness import DEFAULT_PG, PG_ENV, ROOT, Bench, machine, pg_version, versions
from bench.results import markdown, show, write

Step = Callable[[Context], Awaitable[None]]
STEPS: dict[str, Step] = {
    "raw_publish": figures.raw_publish,
    "raw_latency": figures.raw_latency,
    "bare_loop": figures.bare_loop,
    "ingest": figures.ingest,
    "aggregator": figures.aggregator,
    "e2e": figures.e2e,
    "scale": scale.scale,
    "history": history.history,
    "reporting": reporting.reporting,
    "exports": exports.exports,
    "design": design.design,
}
FIGURES: dict[str, list[str]] = {
    "bare": ["raw_publish", "raw_latency", "bare_loop"],
    "ingest": ["raw_publish", "raw_latency", "ingest"],
    "aggregator": ["bare_loop", "aggregator"],
    "e2e": ["raw_publish", "e2e"],
    "scale": ["scale"],
    "history": ["history"],
    "reporting": ["reporting"],
    "exports": ["exports"],
    "design": ["design"],
}
RESULTS_DIR = ROOT / "bench" / "results"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these figures (and their baselines): {', '.join(FIGURES)}; repeatable",
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, 1 with --quick)")
    parser.add_argument(
        "--pg",
        default=os.environ.get(PG_ENV, DEFAULT_PG),
        help=f"PostgreSQL admin URL (${PG_ENV}); a database is made and dropped per measurement",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SIZE=N",
        help="override one size (e.g. --set drain_events=50000); see bench/context.py",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run every child service under cProfile, writing its .prof file to DIR",
    )
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    names = [n for item in args.only or [] for n in item.split(",") if n]
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    args.only = names or list(FIGURES)
    known = {f.name: f.type for f in fields(Sizes)}
    args.sizes = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in known or name == "runs" or not value:
            parser.error(f"--set {item}: choose SIZE=N with SIZE one of {', '.join(known)}")
        args.sizes[name] = float(value) if known[name] in ("float", float) else int(value)
    return args


def steps_for(names: list[str]) -> list[str]:
    wanted = {step for name in names for step in FIGURES[name]}
    return [step for step in STEPS if step in wanted]


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    sizes = Sizes.quick(args.runs or 1) if args.quick else Sizes(runs=args.runs or 3)
    sizes = replace(sizes, **args.sizes)
    steps = steps_for(args.only)
    started = datetime.now(UTC)
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "quick": args.quick,
        "figures_selected": args.only,
        "sizes": asdict(sizes),
        "machine": machine(),
        "versions": versions(await pg_version(args.pg)),
        "git": _git(),
    }
    with tempfile.TemporaryDirectory(prefix="cotn-bench-") as tmp:
        bench = Bench(
            workdir=Path(tmp), pg_admin=args.pg, quick=args.quick, profile_dir=args.profile
        )
        ctx = Context(bench=bench, sizes=sizes, steps=set(steps))
        async with bench.stack:
            for step in steps:
                console.log(f"{step}: {sizes.runs} run(s)")
                await STEPS[step](ctx)
    meta["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    meta["load_average_after"] = list(os.getloadavg())
    path = write(ctx.results, meta, args.out)
    m = meta["machine"]
    title = (
        f"COTN bench {meta['date']} · {m['nproc']} CPU {m['cpu_model']} · "
        f"{m['memory_mib']} MiB · load {m['load_average'][0]:.2f}"
        + (" · QUICK (not a measurement)" if args.quick else "")
    )
    show(ctx.results, title, console)
    if args.markdown:
        console.print(markdown(ctx.results), markup=False, highlight=False)
    console.print(f"results: {path}")
    return {"path": path, "meta": meta}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=None if sys.stdout.isatty() else 150)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(run(args, console))
    else:
        uvloop.run(run(args, console))
    return 0
