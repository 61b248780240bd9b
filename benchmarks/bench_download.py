"""Throughput and peak memory of `owui-replay download` on a large export, next to curl and
the cookbook's fetch (requests.get(...).json()), interleaved over rounds in one run.

    python benchmarks/bench_download.py --rounds 3   # uses benchmarks/out/export-500mb.json

The Open WebUI stand-in runs in its own process and streams the file; each client runs in a
fresh process (curl: `curl -s -o FILE -H 'Authorization: Bearer ...' URL`). Prints
min / median / max of each, and owui-replay's throughput as a share of curl's (goal >= 80%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.generate_export import generate  # noqa: E402
from tests.openwebui_stub import ADMIN_TOKEN  # noqa: E402

OURS = """
import resource, sys, os
sys.path.insert(0, sys.argv[3])
os.environ.update(OPENWEBUI_BASE_URL=sys.argv[1], OPENWEBUI_TOKEN=sys.argv[2])
from owui_replay.cli import main
code = main(["download", "-o", sys.argv[4], "-q"])
print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

COOKBOOK = """
import resource, sys, json, requests
url, token, _root, out = sys.argv[1:5]
response = requests.get(url + "/api/v1/evaluations/feedbacks/all/export",
                        headers={"Authorization": f"Bearer {token}"}, timeout=300)
response.raise_for_status()
payload = response.json()
json.dump(payload, open(out, "w"))
print(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(code: str, url: str, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, url, ADMIN_TOKEN, str(ROOT), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    status, peak_kib = done.stdout.split()[-2:]
    assert status == "0", done.stderr
    return seconds, int(peak_kib) / 1024


def measure_curl(url: str, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run(
        ["curl", "-s", "-f", "-o", str(out), "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
         url + "/api/v1/evaluations/feedbacks/all/export"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start, 0.0


def main() -> None:
    import os
    import statistics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    export = HERE / "out" / f"export-{args.size_mb}mb.json"
    if not export.exists():
        generate(export, args.size_mb)
    mb = export.stat().st_size / 1e6
    server = subprocess.Popen(
        [sys.executable, str(HERE / "openwebui_server.py"), str(export)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        results: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name in ("curl", "owui-replay download", "cookbook fetch"):
                out = HERE / "out" / "downloaded.json"
                if name == "curl":
                    results.setdefault(name, []).append(measure_curl(url, out))
                else:
                    code = OURS if name == "owui-replay download" else COOKBOOK
                    results.setdefault(name, []).append(measure(code, url, out))
                out.unlink(missing_ok=True)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    print(f"{export.name}: {mb:.0f} MB, {args.rounds} interleaved rounds; load before: {load}")
    for name, runs in results.items():
        rates = sorted(mb / seconds for seconds, _ in runs)
        rss = max(r for _, r in runs)
        print(f"  {name:<22} {rates[0]:6.0f} / {statistics.median(rates):6.0f} / {rates[-1]:6.0f}"
              f" MB/s" + (f"   peak RSS {rss:5.0f} MB" if rss else ""))  # fmt: skip
    shares = [c / o for (o, _), (c, _) in zip(results["owui-replay download"], results["curl"],
                                                strict=True)]  # fmt: skip
    print(f"  owui-replay / curl throughput: {min(shares):.0%} / {statistics.median(shares):.0%}"
          f" / {max(shares):.0%}   (goal >= 80%)")  # fmt: skip
    print(json.dumps({k: [{"seconds": s, "peak_rss_mb": r} for s, r in v]
                      for k, v in results.items()}))  # fmt: skip


if __name__ == "__main__":
    main()
