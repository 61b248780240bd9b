"""Event-to-Portkey latency of `owui-replay listen` at a steady event rate.

    python benchmarks/bench_listen.py [--rounds 3] [--seconds 60] [--rate 20] [--latency 0.02]

The listener runs as its own process, as deployed; the Open WebUI and Portkey stand-ins run in
this process. Open WebUI posts each event 20-60 ms after the change, as a real 0.12.4 server
does; the clock starts when it *sends* the event (its own delay is Open WebUI's, not the
listener's) and stops when Portkey's stand-in has stored the payload, minus Portkey's own
latency (--latency, slept by the stand-in before storing). So each figure is what the listener
adds: receiving and recording the hint, fetching the record from Open WebUI, validating,
mapping, judging against the delivery state, the intent commit, and the request.

Two shapes, interleaved round by round: `create` (every event a new rating: a POST) and `flip`
(every event a thumb flipped on one of 200 ratings already mirrored: a PUT). Per round: the
median and p99 of the events' latencies, and the listener's CPU milliseconds per event;
reported as min / median / max over the rounds, with the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.figures import load, spread  # noqa: E402
from tests.openwebui_live_stub import LiveOwui, LiveServer, new_rating  # noqa: E402
from tests.openwebui_stub import ADMIN_TOKEN  # noqa: E402
from tests.portkey_stub import API_KEY, StubServer, StubState  # noqa: E402
from tests.serving import serving  # noqa: E402

EXPORT = ROOT / "fixtures" / "openwebui-0.12.4" / "export.json"
FLIP_POOL = 200


class TimedOwui(LiveOwui):
    """The live stand-in, noting when each event leaves for the webhook."""

    sent_at: dict[tuple[str, int], float]

    def _post(self, url: str, body: bytes) -> None:
        event = json.loads(body)
        rating = event["data"].get("rating")
        if rating is not None:
            key = (event["subject"]["id"], int(rating))
            with self.lock:
                self.sent_at[key] = time.perf_counter()
        super()._post(url, body)


class Arrivals:
    """Portkey's hook: when each (feedback id, value) was stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at: dict[tuple[str, int], float] = {}

    def __call__(self, phase: str, items: Any) -> None:
        if phase != "stored":
            return
        now = time.perf_counter()
        with self.lock:
            for item in items:
                self.at[(item["metadata"]["feedback_id"], int(item["value"]))] = now


def listener(owui: LiveServer, pk: StubServer, root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENWEBUI_BASE_URL": owui.url,
           "OPENWEBUI_TOKEN": ADMIN_TOKEN, "PORTKEY_API_KEY": API_KEY,
           "PORTKEY_BASE_URL": pk.url}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "owui_replay", "listen", "--listen", "127.0.0.1:0", "--register",
         "--workdir", str(root / "work"), "--ledger", str(root / "ledger.sqlite3")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "reconciled:" in line:
            break
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
    return process


def wait_until(condition: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)


def one_round(shape: str, seconds: float, rate: float, latency: float) -> dict[str, float]:
    templates = [r for r in json.loads(EXPORT.read_text()) if r.get("snapshot")]
    rng = random.Random(20)
    arrivals = Arrivals()
    owui = TimedOwui(rng=random.Random(3))
    owui.sent_at = {}
    pool = []
    if shape == "flip":
        for i in range(FLIP_POOL):
            record = new_rating(templates[i % len(templates)], 1)
            owui.records[record["id"]] = copy.deepcopy(record)
            pool.append(record["id"])
    pk_state = StubState(latency=latency, hook=arrivals)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(StubServer(pk_state)) as pk,
        serving(LiveServer(owui)) as server,
    ):
        process = listener(server, pk, Path(tmp))
        wait_until(lambda: len(arrivals.at) >= len(pool), 60)  # the start-up reconcile
        time.sleep(2.0)  # and its settle fetches, 1.6 s later
        arrivals.at.clear()
        cpu_start = _cpu(process.pid)
        expected: list[tuple[str, int]] = []
        start = time.perf_counter()
        for n in range(int(seconds * rate)):
            pause = start + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            if shape == "create":
                fid = owui.create(new_rating(rng.choice(templates), 1))
                expected.append((fid, 1))
            else:
                fid = pool[n % len(pool)]
                value = -int(owui.records[fid]["data"]["rating"])
                owui.update(fid, value)
                expected.append((fid, value))
        wait_until(lambda: all(k in arrivals.at for k in expected), 30)
        cpu = _cpu(process.pid) - cpu_start
        process.terminate()
        process.wait(10)
    latencies = [
        (arrivals.at[k] - owui.sent_at[k] - latency) * 1000
        for k in expected
        if k in arrivals.at and k in owui.sent_at
    ]
    latencies.sort()
    return {
        "events": len(expected),
        "arrived": len(latencies),
        "median_ms": statistics.median(latencies),
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "max_ms": latencies[-1],
        "cpu_ms_per_event": cpu * 1000 / max(1, len(expected)),
    }


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    rounds: int, seconds: float, rate: float, latency: float
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {"create": [], "flip": []}
    for _ in range(rounds):
        for shape in results:
            results[shape].append(one_round(shape, seconds, rate, latency))
    return results


def report(results: dict[str, list[dict[str, float]]], rate: float, seconds: float) -> None:
    print(f"event to Portkey, above Portkey's own latency, {rate:g} events/s for {seconds:g} s")
    for shape, runs in results.items():
        lost = sum(r["events"] - r["arrived"] for r in runs)
        print(
            f"  {shape:<6} median ms {spread([r['median_ms'] for r in runs])}   "
            f"p99 ms {spread([r['p99_ms'] for r in runs])}   "
            f"max ms {spread([r['max_ms'] for r in runs])}   "
            f"CPU ms/event {spread([r['cpu_ms_per_event'] for r in runs])}   "
            f"not arrived {lost}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.02, help="Portkey's own, seconds")
    args = parser.parse_args()
    print(f"load before: {load()}")
    results = run(args.rounds, args.seconds, args.rate, args.latency)
    report(results, args.rate, args.seconds)
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
