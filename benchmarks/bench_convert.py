"""Convert throughput and memory next to bare ijson parsing, interleaved rounds in one run.

    python benchmarks/bench_convert.py                       # 3 rounds, both shapes
    python benchmarks/bench_convert.py --rounds 5 --long-mb 50 --short-mb 30
    python benchmarks/bench_convert.py --jobs bare convert convert_dry cookbook

Two export shapes, generated once by the benchmark itself (benchmarks/out/, git-ignored):
long chats (the real 0.12.4 nesting, ~60 kB records, --long-mb, default 500 MB) and short
strings (~60 kB records of 24 messages made of many short strings with escapes, CJK and emoji,
--short-mb, default 200 MB). Each round runs every job once on each shape, each in a fresh
interpreter (imports before the clock starts). Prints MB/s and peak RSS of each job as
min / median / max over the rounds, and convert's throughput as a share of bare ijson.items
parsing of the same file in the same round (goal >= 85%), and its peak RSS (goal <= 64 MB).

Jobs: bare (ijson.items only), bare_hashed (plus the input sha256 in line), convert_dry
(validate and map, write nothing), convert (the real thing), cookbook (json.load of the whole
file, then the cookbook's map_item: slow and gigabytes of memory on the 500 MB export).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.figures import load, spread  # noqa: E402
from benchmarks.generate_export import generate  # noqa: E402

JOBS = ("bare", "bare_hashed", "convert_dry", "convert", "cookbook")
GOAL_SHARE = 0.85
GOAL_RSS_MB = 64


def export_of(shape: str, size_mb: int) -> Path:
    name = f"export-{size_mb}mb.json" if shape == "long-chats" else f"export-short-{size_mb}mb.json"
    path = HERE / "out" / name
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        generate(path, size_mb, shape=shape)
    return path


def _warm(path: Path) -> None:
    """Read the file once in small blocks so every job reads from the page cache (a big read
    here would raise this process's peak RSS, which a forked child would report as its own)."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(1 << 20):
            pass


def run_job(job: str, export: Path) -> dict[str, Any]:
    out = HERE / "out" / f"{job}.jsonl"
    done = subprocess.run(
        [sys.executable, str(HERE / "convert_child.py"), job, str(export), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for leftover in out.parent.glob(f"{job}.*"):
        leftover.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    exports: dict[str, Path], jobs: list[str], rounds: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{shape: {job: [result per round]}}, rounds interleaved across shapes and jobs."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in exports}
    for _ in range(rounds):
        for shape, export in exports.items():
            _warm(export)
            for job in jobs:
                results[shape].setdefault(job, []).append(run_job(job, export))
    return results


def shares(runs: dict[str, list[dict[str, Any]]]) -> list[float]:
    """convert's throughput as a share of bare parsing, round by round."""
    pairs = zip(runs["bare"], runs["convert"], strict=True)
    return sorted(bare["seconds"] / ours["seconds"] for bare, ours in pairs)


def report(exports: dict[str, Path], results: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    for shape, runs in results.items():
        export = exports[shape]
        mb = export.stat().st_size / 1e6
        first = next(iter(runs.values()))
        records = first[0]["records"]
        print(f"\n{shape}: {export.name}, {mb:.0f} MB, {records} records "
              f"({mb * 1e3 / records:.0f} kB avg), {len(first)} rounds")  # fmt: skip
        print(f"  {'job':<12} {'MB/s (min / median / max)':>27} {'peak RSS (max)':>15}")
        for job, timings in runs.items():
            rates = [mb / r["seconds"] for r in timings]
            rss = max(r["peak_rss_kib"] for r in timings) / 1024
            print(f"  {job:<12} {spread(rates, '{:.0f}'):>27} {rss:12.0f} MB")
        if "bare" in runs and "convert" in runs:
            share = shares(runs)
            rss = max(r["peak_rss_kib"] for r in runs["convert"]) / 1024
            print(f"  convert / bare: {spread(share, '{:.0%}')}   (goal >= {GOAL_SHARE:.0%})")
            print(f"  convert peak RSS: {rss:.0f} MB   (goal <= {GOAL_RSS_MB} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long-mb", type=int, default=500)
    parser.add_argument("--short-mb", type=int, default=200)
    parser.add_argument("--jobs", nargs="+", default=["bare", "convert"], choices=JOBS)
    args = parser.parse_args()
    exports = {
        "long-chats": export_of("long-chats", args.long_mb),
        "short-strings": export_of("short-strings", args.short_mb),
    }
    before = load()
    results = measure(exports, args.jobs, args.rounds)
    print(f"load average: {before} before, {load()} after ({os.cpu_count()} CPUs)")
    report(exports, results)


if __name__ == "__main__":
    main()
