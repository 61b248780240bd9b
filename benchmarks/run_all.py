"""Every performance figure of the tool in one run, each next to its goal.

    python benchmarks/run_all.py                 # 3 interleaved rounds, full sizes (~15 min)
    python benchmarks/run_all.py --rounds 5
    python benchmarks/run_all.py --quick         # small inputs: checks the benchmarks run

Runs, in this order: download (bench_download: a 500 MB export from the Open WebUI stand-in,
streamed, built and sent whole, and built after the wait a real 0.12.4 server takes, next to
curl), replay (bench_replay: 20 ms latency vs the cookbook loop on two line shapes with CPU per
request; a 100 req/s sliding-window limit with `Retry-After: 1`, without and with --rate),
convert (bench_convert: long chats and short escape-heavy strings, next to bare ijson.items,
and peak RSS). Each part prints its own detail; the summary at the end gives every figure as
min / median / max over the rounds, its goal, and whether the median meets it. Run it on an
otherwise idle machine; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import bench_convert, bench_download, bench_replay  # noqa: E402
from benchmarks.figures import load, spread  # noqa: E402
from tests.replay_helpers import make_feedback  # noqa: E402

Row = tuple[str, list[float], str, Callable[[float], bool], str]


def download_rows(rounds: int, size_mb: int) -> list[Row]:
    print(f"== download ({size_mb} MB)")
    export = bench_download.HERE / "out" / f"export-{size_mb}mb.json"
    if not export.exists():
        bench_download.generate(export, size_mb)
    results = bench_download.run(export, rounds)
    rows: list[Row] = []
    for mode, runs in results.items():
        share = [s * 100 for s in bench_download.shares(runs)]
        rows.append((f"download vs curl, server {mode}", share, ">= 80%", _at_least(80), "%"))
        print(f"   {mode}: {_spread(share, '%')} of curl's throughput")
    return rows


def replay_rows(rounds: int, lines: int, limited_lines: int) -> list[Row]:
    print("== replay")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        shapes = {
            "short lines": make_feedback(tmp, lines),
            "real-shaped lines": bench_replay.real_shaped(tmp, lines),
        }
        latency = bench_replay.latency_case(shapes, lines, rounds, tmp)
        limited = bench_replay.limit_case(100.0, limited_lines, rounds, tmp, "1")
    rows.append(
        ("replay at 100 req/s limit, no --rate", limited["default"]["percent"], ">= 95%",
         _at_least(95), "%")
    )  # fmt: skip
    rows.append(
        ("replay at 100 req/s limit, --rate 100", limited["--rate=limit"]["percent"], ">= 97%",
         _at_least(97), "%")
    )  # fmt: skip
    for shape, found in latency.items():
        rows.append((f"replay vs cookbook at 20 ms, {shape}", found["ratio"], ">= 12x",
                     _at_least(12), "x"))  # fmt: skip
        rows.append((f"replay CPU per request, {shape}", found["cpu_ms"], "reported",
                     lambda _: True, " ms"))  # fmt: skip
    return rows


def convert_rows(rounds: int, long_mb: int, short_mb: int) -> list[Row]:
    print("== convert")
    exports = {
        "long-chats": bench_convert.export_of("long-chats", long_mb),
        "short-strings": bench_convert.export_of("short-strings", short_mb),
    }
    results = bench_convert.measure(exports, ["bare", "convert"], rounds)
    bench_convert.report(exports, results)
    rows: list[Row] = []
    for shape, runs in results.items():
        share = [s * 100 for s in bench_convert.shares(runs)]
        rows.append((f"convert vs bare ijson, {shape}", share, ">= 85%", _at_least(85), "%"))
    for shape, runs in results.items():
        rss = [r["peak_rss_kib"] / 1024 for r in runs["convert"]]
        rows.append((f"convert peak RSS, {shape}", rss, "<= 64 MB", lambda v: v <= 64, " MB"))
    return rows


def _at_least(goal: float) -> Callable[[float], bool]:
    return lambda value: value >= goal


def _spread(values: list[float], unit: str) -> str:
    return spread(values, "{:.2f}" if unit.strip() in ("x", "ms") else "{:.1f}") + unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small inputs, to check it runs")
    parser.add_argument("--only", nargs="+", choices=("download", "replay", "convert"))
    args = parser.parse_args()
    parts = args.only or ["download", "replay", "convert"]
    quick = args.quick
    before = load()
    print(f"load average before: {before} ({os.cpu_count()} CPUs), {args.rounds} rounds")
    rows: list[Row] = []
    if "download" in parts:
        rows += download_rows(args.rounds, 50 if quick else 500)
    if "replay" in parts:
        rows += replay_rows(args.rounds, 120 if quick else 600, 300 if quick else 1500)
    if "convert" in parts:
        rows += convert_rows(args.rounds, 50 if quick else 500, 30 if quick else 200)
    print(f"\nsummary: min / median / max over {args.rounds} interleaved rounds; "
          f"load average {before} before, {load()} after")  # fmt: skip
    width = max(len(name) for name, *_ in rows)
    for name, values, goal, met, unit in rows:
        verdict = "met" if met(statistics.median(values)) else "NOT MET"
        if goal == "reported":
            verdict = ""
        print(f"  {name:<{width}}  {_spread(values, unit):>26}  goal {goal:<9} {verdict}")


if __name__ == "__main__":
    main()
