"""`owui-replay report` on a million lines: seconds, peak RSS and page size, two line shapes.

    python benchmarks/bench_report.py [--rounds 3] [--lines 1000000] [--baseline DIR]

Generates (once) two handoffs in benchmarks/out/, each a JSONL with an empty rejects file and
a manifest that matches it (so every verify check passes and the whole page is built):

- `fixture-shaped`: the bundled 0.12.4 handoff's lines with fresh ids, 2 models, 200 raters,
  30 days, a comment on 30% of the lines (~800 bytes a line);
- `text-heavy`: every line carries a 100-128 character comment, a reason and tags, 5% of
  the comments hold an e-mail address, phone number, URL or key, 40 models, 5,000 raters,
  two years of days (~1 kB a line).

Each report runs in a fresh interpreter (its own peak RSS, VmHWM, and the largest of the worker
processes it starts, ru_maxrss of its children), interleaved round by round with a `verify` of
the same file (the checks the page runs, for the ratio: what the page adds to them; leave it
out with --no-verify) and, with `--baseline DIR`, with the report of another checkout's code
(e.g. `git worktree add /tmp/main-report main`), so the speed-up is measured under the same
load. A tenth of the first shape shows whether memory grows with the input. Goal: under 30 s
for a million lines, flat memory, a page under 5 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.figures import load, spread  # noqa: E402

FIXTURE = ROOT / "fixtures" / "openwebui-0.12.4" / "expected" / "feedback.jsonl"
WORDS = (
    "the answer was clear but a bit long and missed the part about refunds joins latency "
    "index policy customer ticket summary great wrong outdated helpful thanks résumé 日本語 👍"
).split()
PERSONAL = [
    "mail me at jane.doe@example.org",
    "call +44 20 7946 0958",
    "see https://intranet.example/wiki/Page?id=7",
    "my key sk-abcdefghijklmnop1234 leaked",
]


def words(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(40))
    return text[: rng.randint(low, high)].strip()


def generate(path: Path, lines: int, shape: str, seed: int = 7) -> None:
    """Write PATH with LINES payloads of SHAPE."""
    rng = random.Random(seed)
    templates = [json.loads(line) for line in FIXTURE.read_text("utf-8").splitlines()]
    text_heavy = shape == "text-heavy"
    models = [f"model-{i}" for i in range(40)] if text_heavy else ["my-model-config", "qwen-helper"]
    raters = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5000 if text_heavy else 200)]
    days = 730 if text_heavy else 30
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(lines):
            payload = json.loads(json.dumps(rng.choice(templates)))
            metadata = payload["metadata"]
            metadata["feedback_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
            metadata["model_id"] = rng.choice(models)
            metadata["_user"] = metadata["user_id"] = rng.choice(raters)
            metadata["updated_at"] = str(1795000000 + rng.randrange(days * 86400))
            payload["value"] = rng.choice((1, 1, -1))
            if text_heavy:
                comment = words(rng, 100, 128)
                if rng.random() < 0.05:
                    comment = (rng.choice(PERSONAL) + " " + comment)[:128]
                metadata.update(comment=comment, reason="other", tags="ops,billing,sql")
            elif rng.random() < 0.3:
                metadata["comment"] = words(rng, 10, 128)
            line = (json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                    + "\n").encode("utf-8")  # fmt: skip
            out.write(line)


def write_manifest(path: Path) -> None:
    """A manifest that matches PATH as this version writes it (so verify passes)."""
    from owui_replay._version import __version__
    from owui_replay.atomic import hash_file
    from owui_replay.mapping import MappingOptions

    digest, lines = hash_file(path)
    stem = path.name.removesuffix(".jsonl")
    rejects = path.with_name(stem + ".rejects.jsonl")
    rejects.write_bytes(b"")
    manifest = {
        "manifest_version": 1,
        "tool": {"name": "owui-replay", "version": __version__},
        "options": MappingOptions().as_dict(),
        "input": {"name": "generated", "bytes": 0, "sha256": "0" * 64},
        "counts": {"records": lines, "written": lines, "invalid": 0, "skipped": 0,
                   "filtered": 0, "duplicate": 0, "superseded": 0},
        "reasons": {},
        "output": {"file": path.name, "sha256": digest, "lines": lines,
                   "bytes": path.stat().st_size},
        "rejects": {"file": rejects.name, "sha256": hashlib.sha256(b"").hexdigest(),
                    "lines": 0, "bytes": 0},
    }  # fmt: skip
    path.with_name(stem + ".manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")


def ensure(shape: str, lines: int) -> Path:
    path = HERE / "out" / f"report-{shape}-{lines}.jsonl"
    if not path.exists():
        start = time.perf_counter()
        generate(path, lines, shape)
        print(f"generated {path.name} in {time.perf_counter() - start:.0f} s", flush=True)
    write_manifest(path)
    return path


def child(job: str, feedback: str, code: str) -> None:
    """One report (or, for the ratio, one verify) in this fresh interpreter, by the owui_replay
    found in CODE: print seconds, peak RSS (this process, and its largest worker) and the
    page's size."""
    import contextlib
    import io
    import resource

    sys.path.insert(0, code)
    from benchmarks.convert_child import peak_rss_kib
    from owui_replay.cli import main

    if not Path(sys.modules["owui_replay"].__file__ or "").is_relative_to(Path(code).resolve()):
        raise SystemExit(f"owui_replay was not imported from {code}")

    page = str(Path(feedback).with_suffix(".html"))
    argv = ["report", feedback, "-o", page, "-q"] if job == "report" else ["verify", feedback]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        exit_code = main(argv)
    seconds = time.perf_counter() - start
    size = Path(page).stat().st_size if job == "report" else 0
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"code": exit_code, "seconds": seconds, "peak_kib": peak_rss_kib(),
                      "workers_kib": workers, "page": size}))  # fmt: skip


def cpu_of_children() -> float:
    """User and system CPU seconds of every finished child (and its children) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(feedback: Path, job: str = "report", code: Path = ROOT) -> dict[str, float]:
    """One run in a fresh interpreter; its CPU seconds count the worker processes too (less
    sensitive to the load than the seconds on the clock)."""
    cpu = cpu_of_children()
    done = subprocess.run(
        [sys.executable, __file__, "--child", job, str(feedback), str(code)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu"] = cpu_of_children() - cpu
    if result["code"] != 0:
        raise SystemExit(f"report of {feedback} exited {result['code']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=Path, help="a checkout whose report to compare")
    parser.add_argument("--no-verify", action="store_true", help="leave out verify's runs")
    parser.add_argument(
        "--child", nargs=3, metavar=("JOB", "FEEDBACK", "CODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    inputs = {
        f"fixture-shaped, {args.lines:,} lines": ensure("fixture-shaped", args.lines),
        f"text-heavy, {args.lines:,} lines": ensure("text-heavy", args.lines),
        f"fixture-shaped, {args.lines // 10:,} lines": ensure("fixture-shaped", args.lines // 10),
    }
    print(f"load average before: {load()}", flush=True)
    results: dict[str, list[dict[str, float]]] = {label: [] for label in inputs}
    verifies: dict[str, list[float]] = {label: [] for label in inputs}
    baselines: dict[str, list[dict[str, float]]] = {label: [] for label in inputs}
    for _ in range(args.rounds):
        for label, path in inputs.items():
            results[label].append(run(path))
            if args.baseline is not None:
                baselines[label].append(run(path, code=args.baseline))
            if not args.no_verify:
                verifies[label].append(run(path, "verify")["seconds"])
        print(f"round done, load average {load()}", flush=True)
    for label, runs in results.items():
        size = inputs[label].stat().st_size / 1e6
        seconds = [r["seconds"] for r in runs]
        print(f"{label} ({size:,.0f} MB):")
        print(f"   seconds        {spread(seconds)}")
        cpu = [r["cpu"] for r in runs]
        print(f"   CPU seconds    {spread(cpu)} (every process of the run)")
        if baselines[label]:
            base = [b["seconds"] for b in baselines[label]]
            base_cpu = [b["cpu"] for b in baselines[label]]
            ratios = [s / b for s, b in zip(seconds, base, strict=True)]
            cpu_ratios = [s / b for s, b in zip(cpu, base_cpu, strict=True)]
            print(f"   baseline       {spread(base)} s, CPU {spread(base_cpu)} s ({args.baseline})")
            cpu_text = spread(cpu_ratios, "{:.2f}")
            print(f"   this/baseline  {spread(ratios, '{:.2f}')}, CPU {cpu_text}")
        if verifies[label]:
            ratios = [s / v for s, v in zip(seconds, verifies[label], strict=True)]
            print(f"   verify alone   {spread(verifies[label])}")
            print(f"   report/verify  {spread(ratios, '{:.2f}')}")
        print(f"   peak RSS (MB)  {spread([r['peak_kib'] / 1024 for r in runs], '{:.0f}')}")
        workers = [r["workers_kib"] / 1024 for r in runs]
        print(f"   largest worker {spread(workers, '{:.0f}')} MB (ru_maxrss of its children)")
        print(f"   page (MB)      {spread([r['page'] / 1e6 for r in runs], '{:.2f}')}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
