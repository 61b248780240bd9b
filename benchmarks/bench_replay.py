"""Replay throughput against the Portkey stand-in, next to the cookbook's sequential loop.

    python benchmarks/bench_replay.py

In one run, with the stand-in in its own process on 127.0.0.1:
1. 20 ms server latency: `owui-replay replay` with default settings vs the cookbook's
   `for payload in payloads: requests.post(...)` loop; prints the ratio.
2. A server-side limit of --limit requests/s (429 beyond it, no Retry-After): replay with
   default settings (no --rate: it learns the limit from 429s) and with --rate set to the
   limit; prints the achieved rate as a share of the limit and the number of 429s.
3. Zero latency: requests per second and per CPU-second of the replay process (overhead).
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


def run_replay(feedback: Path, url: str, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one `owui-replay replay` process."""
    env = {**os.environ, "PORTKEY_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "owui_replay", "replay", str(feedback), "--base-url", url,
         "--quiet", "--restart", "--no-ledger", "--no-verify", *args],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=600)
    parser.add_argument("--limit", type=float, default=100.0, help="server-side requests/s")
    parser.add_argument("--limited-lines", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feedback = make_feedback(Path(tmp), args.lines)
        print(f"1. 20 ms latency, {args.lines} lines")
        with stub("--latency", "0.02") as url:
            cookbook = run_cookbook(feedback, url)
            ours, _ = run_replay(feedback, url)
            s = stats(url)
        print(f"   cookbook loop   {cookbook:6.2f} s  {args.lines / cookbook:7.1f} req/s")
        print(f"   replay default  {ours:6.2f} s  {args.lines / ours:7.1f} req/s")
        print(f"   ratio           {cookbook / ours:6.1f}x  (stand-in stored {s['stored']})")

        limited = make_feedback(Path(tmp), args.limited_lines, name="limited.jsonl")
        print(f"\n2. server limit {args.limit:g} req/s, {args.limited_lines} lines, no Retry-After")
        for label, extra in (("default", []), ("--rate=limit", ["--rate", str(args.limit)])):
            with stub("--rate-limit", str(args.limit)) as url:
                wall, _ = run_replay(limited, url, *extra)
                s = stats(url)
            achieved = args.limited_lines / wall
            times = s["throttled_at"]
            first = times[0] if times else 0.0
            early = sum(1 for t in times if t < first + 2.0)
            print(f"   {label:<13} {achieved:7.1f} req/s = {achieved / args.limit:5.1%} of the "
                  f"limit, 429s: {len(times)} ({early} in the first 2 s after the first one, "
                  f"{len(times) - early} in the remaining {max(0.0, wall - 2):.0f} s)")  # fmt: skip

        print(f"\n3. zero latency, {args.lines} lines")
        with stub() as url:
            wall, cpu = run_replay(feedback, url)
        print(f"   {args.lines / wall:7.1f} req/s wall, {args.lines / cpu:7.1f} req per CPU-second "
              "of the replay process")  # fmt: skip


if __name__ == "__main__":
    main()
