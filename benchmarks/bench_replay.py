"""Replay throughput against the Portkey stand-in, next to the cookbook's sequential loop.

    python benchmarks/bench_replay.py [--rounds 3] [--lines 600] [--skip-limit]

Every figure is measured in one run, with rounds interleaved (cookbook, replay, replay
--power-safe, then again), and printed as min / median / max over the rounds, with the load
average before and after. The stand-in runs in its own process on 127.0.0.1.

1. 20 ms server latency, on two payload shapes (short synthetic lines; lines shaped like
   convert's output of the real 0.12.4 export, ~1 kB of metadata): `owui-replay replay` with
   default settings vs the cookbook's `for payload in payloads: requests.post(...)` loop, and
   the same with --power-safe. Also the replay process's CPU milliseconds per request.
2. The delivery state's own cost per request: the two committed transactions around every
   request (intent, then outcome), in process, default (synchronous=NORMAL) vs --power-safe.
3. A server-side limit of --limit requests/s (429 beyond it): replay with default settings
   (no --rate: it learns the limit) and with --rate set to the limit.
4. Zero latency: requests per second and per CPU-second of the replay process (overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.figures import load, spread  # noqa: E402
from owui_replay.converting import dumps_line  # noqa: E402
from owui_replay.delivery_state import DeliveryState, Rating  # noqa: E402
from tests.portkey_stub import API_KEY  # noqa: E402
from tests.replay_helpers import make_feedback  # noqa: E402


@contextmanager
def stub(*args: str) -> Any:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "stub_server.py"), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)


def stats(url: str) -> dict[str, Any]:
    base = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(base + "/_stats", timeout=5) as response:
        return json.load(response)


def run_replay(feedback: Path, url: str, state: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one `owui-replay replay` process (a fresh state)."""
    env = {**os.environ, "PORTKEY_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "owui_replay", "replay", str(feedback), "--base-url", url,
         "--quiet", "--restart", "--no-verify", "--ledger", str(state), *args],
        env=env, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


COOKBOOK = """
import json, sys, requests
url, key, path = sys.argv[1], sys.argv[2], sys.argv[3]
for line in open(path, encoding="utf-8"):
    payload = json.loads(line)
    response = requests.post(url + "/feedback", headers={"x-portkey-api-key": key,
        "Content-Type": "application/json"}, json=payload, timeout=30)
    if not response.ok:
        print(response.status_code, response.text, file=sys.stderr)
"""


def run_cookbook(feedback: Path, url: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", COOKBOOK, url, API_KEY, str(feedback)], check=True)
    return time.perf_counter() - start


def real_shaped(directory: Path, count: int) -> Path:
    """COUNT lines shaped like convert's output of the real export, each a distinct rating."""
    converted = directory / "real" / "feedback.jsonl"
    subprocess.run(
        [sys.executable, "-m", "owui_replay", "convert",
         str(ROOT / "fixtures" / "openwebui-0.12.4" / "export.json"), "-o", str(converted), "-q"],
        check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    templates = [json.loads(line) for line in converted.read_text("utf-8").splitlines()]
    path = directory / "real-shaped.jsonl"
    with open(path, "wb") as handle:
        for i in range(count):
            payload = json.loads(json.dumps(templates[i % len(templates)]))
            payload["metadata"]["feedback_id"] = f"bench-{i:06d}"
            handle.write(dumps_line(payload))
    return path


def store_cost(rounds: int, requests: int) -> dict[str, list[float]]:
    """Microseconds per request for intent + outcome commits, normal vs power-safe."""
    result: dict[str, list[float]] = {"default": [], "--power-safe": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for label, durable in (("default", False), ("--power-safe", True)):
                path = Path(tmp) / f"{label}-{r}.sqlite3"
                with DeliveryState(path, "http://127.0.0.1/v1", power_safe=durable) as state:
                    start = time.perf_counter()
                    for i in range(requests):
                        rating = Rating(f"fb-{i}", 1, "c", "t")
                        state.intend([rating], "POST")
                        state.acknowledged([rating], [f"pk-{i}"], "POST")
                    result[label].append((time.perf_counter() - start) / requests * 1e6)
    return result


def latency_case(
    shapes: dict[str, Path], lines: int, rounds: int, tmp: Path
) -> dict[str, dict[str, list[float]]]:
    """{shape: {"ratio", "power_ratio", "cpu_ms", ...}}: replay vs the cookbook at 20 ms."""
    print(f"1. 20 ms latency, {lines} lines, {rounds} interleaved rounds (min / median / max)")
    found: dict[str, dict[str, list[float]]] = {}
    for shape, feedback in shapes.items():
        runs: dict[str, list[float]] = {"cookbook": [], "replay": [], "power": []}
        cpu: list[float] = []
        for r in range(rounds):
            with stub("--latency", "0.02") as url:
                runs["cookbook"].append(run_cookbook(feedback, url))
                wall, used = run_replay(feedback, url, tmp / f"s-{shape}-{r}.sqlite3")
                runs["replay"].append(wall)
                cpu.append(used / lines * 1000)
                wall, _ = run_replay(feedback, url, tmp / f"p-{shape}-{r}.sqlite3", "--power-safe")
                runs["power"].append(wall)
                stored = stats(url)["stored"]
            assert stored == 3 * lines, stored
        ratio = [c / o for c, o in zip(runs["cookbook"], runs["replay"], strict=True)]
        power = [c / o for c, o in zip(runs["cookbook"], runs["power"], strict=True)]
        print(f"   [{shape}]")
        print(f"   cookbook loop      {spread([lines / w for w in runs['cookbook']])} req/s")
        print(f"   replay default     {spread([lines / w for w in runs['replay']])} req/s")
        print(f"   ratio              {spread(ratio)} x   (goal >= 12x)")
        print(f"   ratio --power-safe {spread(power)} x")
        print(f"   replay CPU         {spread(cpu, '{:.2f}')} ms per request")
        found[shape] = {"ratio": ratio, "power_ratio": power, "cpu_ms": cpu}
    return found


def limit_case(
    limit: float, lines: int, rounds: int, tmp: Path, retry_after: str | None
) -> dict[str, dict[str, list[float]]]:
    """{"default" | "--rate=limit": {"percent", "throttled"}} under a sliding-window limit."""
    limited = make_feedback(tmp, lines, name="limited.jsonl")
    header = f"server limit {limit:g} req/s (sliding 1 s window), {lines} lines"
    print(f"\n3. {header}, Retry-After: {retry_after or 'none'}")
    cases: list[tuple[str, list[str]]] = [("default", []), ("--rate=limit", ["--rate", str(limit)])]
    results: dict[str, list[float]] = {label: [] for label, _ in cases}
    throttled: dict[str, list[float]] = {label: [] for label, _ in cases}
    extra = ["--retry-after", retry_after] if retry_after else []
    for r in range(rounds):
        for label, options in cases:
            with stub("--rate-limit", str(limit), *extra) as url:
                wall, _ = run_replay(limited, url, tmp / f"l-{label}-{r}.sqlite3", *options)
                throttled[label].append(len(stats(url)["throttled_at"]))
            results[label].append(lines / wall / limit * 100)
    goals = {"default": 95, "--rate=limit": 97}
    for label, _ in cases:
        count = spread(throttled[label], "{:.0f}")
        print(f"   {label:<13} {spread(results[label])} % of the limit (incl. start-up), "
              f"429s: {count}   (goal >= {goals[label]}%)")  # fmt: skip
    return {label: {"percent": results[label], "throttled": throttled[label]} for label in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=float, default=100.0, help="server-side requests/s")
    parser.add_argument("--limited-lines", type=int, default=1500)
    parser.add_argument("--skip-limit", action="store_true", help="skip the rate-limit case")
    args = parser.parse_args()
    print(f"load average before: {load()}  ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        shapes = {
            "short lines": make_feedback(tmp, args.lines),
            "real-shaped lines": real_shaped(tmp, args.lines),
        }
        latency_case(shapes, args.lines, args.rounds, tmp)

        cost = store_cost(args.rounds, 2000)
        print("\n2. delivery state: intent + outcome commits per request, in process")
        for label, values in cost.items():
            print(f"   {label:<13} {spread(values)} µs per request")

        if not args.skip_limit:
            limit_case(args.limit, args.limited_lines, args.rounds, tmp, "1")

        print(f"\n4. zero latency, {args.lines} lines")
        walls: list[float] = []
        cpus: list[float] = []
        for r in range(args.rounds):
            with stub() as url:
                wall, cpu = run_replay(shapes["short lines"], url, tmp / f"z-{r}.sqlite3")
            walls.append(args.lines / wall)
            cpus.append(args.lines / cpu)
        print(f"   {spread(walls)} req/s wall, {spread(cpus)} requests per CPU-second")
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
