"""What the depth and surrogate checks cost convert: this tree against a baseline revision.

    python benchmarks/bench_guard.py --baseline-rev 82f2b5e --rounds 3 [--stdin]

Generates (once) the 500 MB long-chat export and a 200 MB short-string export in
benchmarks/out/ (other sizes with --long-mb and --short-mb), checks out the baseline revision
in a temporary git worktree, then runs `owui-replay convert` from each tree in fresh
interpreters, interleaved round by round, and prints the throughput of this tree as a share
of the baseline's (min / median / max) and the load average. --stdin measures convert reading
the export from stdin as well (the checks then run in the converting process).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.figures import load, spread  # noqa: E402


def shapes(long_mb: int, short_mb: int) -> dict[str, tuple[str, list[str]]]:
    """label -> (file name in benchmarks/out, generator arguments)."""
    short = ["--size-mb", str(short_mb), "--shape", "short-strings"]
    return {
        f"long chats, {long_mb} MB": (f"export-{long_mb}mb.json", ["--size-mb", str(long_mb)]),
        f"short strings, {short_mb} MB": (f"export-short-{short_mb}mb.json", short),
    }


def ensure(name: str, args: list[str]) -> Path:
    path = HERE / "out" / name
    if not path.exists():
        subprocess.run(
            [sys.executable, str(HERE / "generate_export.py"), *args, "-o", str(path)], check=True
        )
    return path


def cpu_seconds() -> float:
    """User and system CPU seconds of the children waited for so far (their children too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(tree: Path, export: Path, out: Path, stdin: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds (the converting process and its checking child) of one convert
    (of EXPORT by path, or from stdin). CPU time is what a loaded machine does not inflate."""
    cpu = cpu_seconds()
    source = "-" if stdin else str(export)
    start = time.perf_counter()
    with open(export, "rb") as pipe:
        subprocess.run(
            [sys.executable, "-m", "owui_replay", "convert", source, "-o", str(out), "-q"],
            check=True, env={**os.environ, "PYTHONPATH": str(tree)},
            stdin=pipe if stdin else subprocess.DEVNULL,
        )  # fmt: skip
    return time.perf_counter() - start, cpu_seconds() - cpu


def vet_seconds(json_scan_py: Path, export: Path) -> float:
    """CPU seconds of the checking child's work on EXPORT (sha256 and vet_stream over 1 MiB
    blocks), with the json_scan module at JSON_SCAN_PY: it runs beside the parser, which it
    must not hold up."""
    spec = importlib.util.spec_from_file_location(f"scan_{abs(hash(json_scan_py))}", json_scan_py)
    assert spec is not None and spec.loader is not None
    scan = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan)
    digest = hashlib.sha256()

    def blocks() -> Iterator[bytes]:
        with open(export, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                yield block

    start = time.process_time()
    scan.vet_stream(blocks(), lambda line: None)
    return time.process_time() - start


def compare(label: str, export: Path, stdin: bool, where: tuple[Path, Path], rounds: int) -> None:
    """Convert EXPORT with the baseline tree and this one in turn, ROUNDS times; print both
    throughputs and their ratio round by round (min / median / max)."""
    baseline, tmp = where
    size = export.stat().st_size / 1e6
    walls: dict[str, list[float]] = {"baseline": [], "this tree": []}
    cpus: dict[str, list[float]] = {"baseline": [], "this tree": []}
    vets: dict[str, list[float]] = {"baseline": [], "this tree": []}
    for _ in range(rounds):
        for name, tree in (("baseline", baseline), ("this tree", ROOT)):
            wall, cpu = run(tree, export, tmp / name / "f.jsonl", stdin)
            walls[name].append(wall)
            cpus[name].append(cpu)
            if not stdin:
                vets[name].append(vet_seconds(tree / "owui_replay" / "json_scan.py", export))
    print(f"{label} (load {load()}):")
    for name in walls:
        rates = [size / w for w in walls[name]]
        print(
            f"   {name:<10} {spread(rates, '{:6.1f}')} MB/s, CPU {spread(cpus[name], '{:.2f}')} s"
        )
        if vets[name]:
            print(f"   {'':<10} checking child's work alone: {spread(vets[name], '{:.2f}')} s CPU")
    for what, seconds in (("wall time", walls), ("CPU time", cpus)):
        ratios = [t / b for b, t in zip(seconds["baseline"], seconds["this tree"], strict=True)]
        print(f"   this tree / baseline, {what}: {spread(ratios, '{:.1%}')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long-mb", type=int, default=500)
    parser.add_argument("--short-mb", type=int, default=200)
    parser.add_argument("--stdin", action="store_true", help="measure convert from stdin too")
    args = parser.parse_args()
    shaped = shapes(args.long_mb, args.short_mb)
    exports = {label: ensure(name, gen) for label, (name, gen) in shaped.items()}
    print(f"load average before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        add = [*git, "add", "--detach", str(baseline), args.baseline_rev]
        subprocess.run(add, check=True, capture_output=True)
        try:
            for label, export in exports.items():
                for stdin in (False, True) if args.stdin else (False,):
                    compare(label + (", stdin" if stdin else ", by path"), export, stdin,
                            (baseline, Path(tmp)), args.rounds)  # fmt: skip
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                check=False, capture_output=True,
            )  # fmt: skip
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
