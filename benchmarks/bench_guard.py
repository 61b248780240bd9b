"""What the depth and surrogate checks cost convert: this tree against a baseline revision.

    python benchmarks/bench_guard.py --baseline-rev 82f2b5e --rounds 3

Generates (once) the 500 MB long-chat export and a 200 MB short-string export in
benchmarks/out/, checks out the baseline revision in a temporary git worktree, then runs
`owui-replay convert` from each tree in fresh interpreters, interleaved round by round, and
prints the throughput of this tree as a share of the baseline's (min / median / max), with
the peak RSS of each and the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.figures import load, spread  # noqa: E402

SHORT = ["--size-mb", "200", "--shape", "short-strings"]
SHAPES = {
    "long chats, 500 MB": ("export-500mb.json", ["--size-mb", "500"]),
    "short strings, 200 MB": ("export-short-200mb.json", SHORT),
}


def ensure(name: str, args: list[str]) -> Path:
    path = HERE / "out" / name
    if not path.exists():
        subprocess.run(
            [sys.executable, str(HERE / "generate_export.py"), *args, "-o", str(path)], check=True
        )
    return path


def run(tree: Path, export: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one convert."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "owui_replay", "convert", str(export), "-o", str(out), "-q"],
        check=True, env={**os.environ, "PYTHONPATH": str(tree)},
    )  # fmt: skip
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    exports = {label: ensure(name, gen) for label, (name, gen) in SHAPES.items()}
    print(f"load average before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        add = [*git, "add", "--detach", str(baseline), args.baseline_rev]
        subprocess.run(add, check=True, capture_output=True)
        try:
            for label, export in exports.items():
                size = export.stat().st_size / 1e6
                times: dict[str, list[float]] = {"baseline": [], "this tree": []}
                for _ in range(args.rounds):
                    for name, tree in (("baseline", baseline), ("this tree", ROOT)):
                        wall, _peak = run(tree, export, Path(tmp) / name / "f.jsonl")
                        times[name].append(wall)
                ratios = [b / t for b, t in zip(times["baseline"], times["this tree"], strict=True)]
                print(f"{label}:")
                for name, walls in times.items():
                    rates = [size / w for w in walls]
                    print(f"   {name:<10} {spread(rates, '{:6.1f}')} MB/s")
                print(f"   this tree vs baseline: {spread(ratios, '{:.1%}')} of its throughput")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                check=False, capture_output=True,
            )  # fmt: skip
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
