"""Convert throughput and memory next to bare ijson parsing, measured in one run.

    python benchmarks/bench_convert.py                  # 50 MB and 500 MB exports
    python benchmarks/bench_convert.py --sizes 50 --repeat 3

Generates the exports once (benchmarks/out/, git-ignored), then runs each job in a fresh
interpreter, best of --repeat, and prints throughput as a ratio to bare ijson.items parsing of
the same file, plus peak RSS. Jobs: bare (ijson.items only), bare_hashed (plus the input
sha256 the manifest needs), convert_dry (validate and map, write nothing), convert (the real
thing), cookbook (json.load of the whole file, then the cookbook's map_item).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.generate_export import generate  # noqa: E402

JOBS = ("bare", "bare_hashed", "convert_dry", "convert", "cookbook")


def export_of(size_mb: int) -> Path:
    path = HERE / "out" / f"export-{size_mb}mb.json"
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        generate(path, size_mb)
    return path


def _warm(path: Path) -> None:
    """Read the file once in small blocks so every job reads from the page cache (a big read
    here would raise this process's peak RSS, which a forked child would report as its own)."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(1 << 20):
            pass


def run_job(job: str, export: Path, repeat: int) -> dict[str, float]:
    best: dict[str, float] | None = None
    out = HERE / "out" / f"{job}.jsonl"
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, str(HERE / "convert_child.py"), job, str(export), str(out)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500], metavar="MB")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    args = parser.parse_args()
    for size in args.sizes:
        export = export_of(size)
        mb = export.stat().st_size / 1e6
        _warm(export)
        results = {job: run_job(job, export, args.repeat) for job in args.jobs}
        floor = results.get("bare", {}).get("seconds")
        records = results[args.jobs[0]]["records"]
        print(f"\n{export.name}: {mb:.0f} MB, {records} records ({mb * 1e3 / records:.0f} kB avg)")
        print(f"{'job':<12} {'seconds':>8} {'MB/s':>7} {'vs bare':>8} {'peak RSS':>9}")
        for job, r in results.items():
            ratio = f"{floor / r['seconds']:.0%}" if floor else "-"
            rss = r["peak_rss_kib"] / 1024
            print(f"{job:<12} {r['seconds']:8.2f} {mb / r['seconds']:7.0f} {ratio:>8} {rss:7.0f}MB")


if __name__ == "__main__":
    main()
