"""Runs the benchmark modules named on the command line (default: all) in order."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import time
from pathlib import Path

import orjson

from tools.bench import Figure

MODULES = ("orders", "donations", "charities", "ceiling", "log", "pipeline")


def _median_of_runs(runs: list[list[Figure]]) -> list[Figure]:
    """Each figure's median over the runs; the runs' range goes to stderr."""
    out = []
    for first in runs[0]:
        values = sorted(f.value for run in runs for f in run if f.name == first.name)
        median = statistics.median(values)
        print(f"# {first.name}: median of {values}", file=sys.stderr)
        out.append(Figure(first.name, median, first.unit))
    return out


async def main(names: list[str], output: Path, repeat: int) -> int:
    figures: list[Figure] = []
    failed = 0
    for name in names:
        try:
            module = importlib.import_module(f"tools.bench.{name}")
        except ModuleNotFoundError:
            print(f"# bench {name}: not present, skipped", file=sys.stderr)
            continue
        started = time.monotonic()
        print(f"# bench {name}: running", file=sys.stderr, flush=True)
        try:
            runs: list[list[Figure]] = [await module.run() for _ in range(repeat)]
            found = _median_of_runs(runs) if repeat > 1 else runs[0]
        except Exception as exc:
            failed += 1
            print(f"# bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        for figure in found:
            print(figure.line(), flush=True)
        figures += found
        print(f"# bench {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    by_name = {f.name: f.value for f in figures}
    if "pipeline.orders_per_s" in by_name and "ceiling.orders_per_s" in by_name:
        ratio = Figure(
            "pipeline.ratio_to_ceiling",
            by_name["pipeline.orders_per_s"] / by_name["ceiling.orders_per_s"],
            "ratio",
        )
        print(ratio.line(), flush=True)
        figures.append(ratio)
    results = [{"name": f.name, "value": f.value, "unit": f.unit} for f in figures]
    await asyncio.to_thread(output.write_bytes, orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=list(MODULES))
    parser.add_argument("--output", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each module N times, report the medians"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.names, args.output, args.repeat)))
