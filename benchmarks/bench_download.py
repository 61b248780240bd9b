"""Throughput and peak memory of `owui-replay download` on a large export, next to curl and
the cookbook's fetch (requests.get(...).json()), interleaved over rounds in one run.

    python benchmarks/bench_download.py --rounds 3   # uses benchmarks/out/export-500mb.json

The Open WebUI stand-in runs in its own process, once streaming the file from disk as soon as
it is asked for and once sending it the way 0.12.4 does (the whole body built first, then one
write with a Content-Length: see openwebui_server.py). Each client runs in a fresh process
(curl: `curl -s -o FILE -H 'Authorization: Bearer ...' URL`), curl and owui-replay alternating.
Prints min / median / max of each, and owui-replay's throughput as a share of curl's, round by
round (goal >= 80%). --cookbook adds requests.get().json() (slow: ~4 GB of memory).
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

from benchmarks.figures import load, spread  # noqa: E402
from benchmarks.generate_export import generate  # noqa: E402
from tests.openwebui_stub import ADMIN_TOKEN  # noqa: E402

OURS = """
import sys, os
sys.path.insert(0, sys.argv[3])
from benchmarks.convert_child import peak_rss_kib
os.environ.update(OPENWEBUI_BASE_URL=sys.argv[1], OPENWEBUI_TOKEN=sys.argv[2])
from owui_replay.cli import main
code = main(["download", "-o", sys.argv[4], "-q"])
print(code, peak_rss_kib())
"""

COOKBOOK = """
import sys, json, requests
url, token, root, out = sys.argv[1:5]
sys.path.insert(0, root)
from benchmarks.convert_child import peak_rss_kib
response = requests.get(url + "/api/v1/evaluations/feedbacks/all/export",
                        headers={"Authorization": f"Bearer {token}"}, timeout=300)
response.raise_for_status()
payload = response.json()
json.dump(payload, open(out, "w"))
print(0, peak_rss_kib())
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


# A real 0.12.4 server takes 3-7 s to build a 317 MB export before its first byte
# (../shared/OPENWEBUI-FACTS.md): the midpoint, scaled to the export's size
BUILD_SECONDS_PER_MB = 5.0 / 317


def servers(mb: float) -> dict[str, list[str]]:
    return {
        # chunks from disk as soon as asked: the network alone sets the pace, the strictest case
        "streamed": [],
        # the whole body in memory first, then one write with a Content-Length, as 0.12.4 sends
        "built": ["--built"],
        # the same, after the time the real server takes to build it
        "0.12.4-like": ["--built", "--wait", f"{BUILD_SECONDS_PER_MB * mb:.2f}"],
    }


def run(
    export: Path, rounds: int, cookbook: bool = False
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{server mode: {client: [(seconds, peak RSS MB)] per round}}, clients interleaved."""
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    out = HERE / "out" / "downloaded.json"
    for mode, flags in servers(export.stat().st_size / 1e6).items():
        server = subprocess.Popen(
            [sys.executable, str(HERE / "openwebui_server.py"), str(export), *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            runs = results.setdefault(mode, {})
            for _ in range(rounds):
                runs.setdefault("curl", []).append(measure_curl(url, out))
                out.unlink(missing_ok=True)
                runs.setdefault("owui-replay download", []).append(measure(OURS, url, out))
                out.unlink(missing_ok=True)
                out.with_name(out.name + ".sha256").unlink(missing_ok=True)
                if cookbook:
                    runs.setdefault("cookbook fetch", []).append(measure(COOKBOOK, url, out))
                    out.unlink(missing_ok=True)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(10)
    return results


def shares(runs: dict[str, list[tuple[float, float]]]) -> list[float]:
    """owui-replay's throughput as a share of curl's, round by round."""
    pairs = zip(runs["owui-replay download"], runs["curl"], strict=True)
    return sorted(curl / ours for (ours, _), (curl, _) in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cookbook", action="store_true", help="also time requests.get().json()")
    args = parser.parse_args()
    export = HERE / "out" / f"export-{args.size_mb}mb.json"
    if not export.exists():
        generate(export, args.size_mb)
    mb = export.stat().st_size / 1e6
    before = load()
    results = run(export, args.rounds, args.cookbook)
    print(
        f"{export.name}: {mb:.0f} MB, {args.rounds} interleaved rounds; load {before} -> {load()}"
    )
    for mode, runs in results.items():
        print(f"  server {mode}:")
        for name, timings in runs.items():
            rates = [mb / seconds for seconds, _ in timings]
            rss = max(r for _, r in timings)
            memory = f"   peak RSS {rss:4.0f} MB" if rss else ""
            print(f"    {name:<22} {spread(rates, '{:6.0f}')} MB/s{memory}")
        share = spread(shares(runs), "{:.0%}")
        print(f"    owui-replay / curl throughput: {share}   (goal >= 80%)")
    raw = {mode: {k: [{"seconds": s, "peak_rss_mb": r} for s, r in v] for k, v in runs.items()}
           for mode, runs in results.items()}  # fmt: skip
    print(json.dumps(raw))


if __name__ == "__main__":
    main()
