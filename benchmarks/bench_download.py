"""Peak memory and throughput of `owui-replay download` on a large export, next to the
cookbook's fetch (requests.get(...).json()), in one run.

    python benchmarks/bench_download.py            # uses benchmarks/out/export-500mb.json

The Open WebUI stand-in runs in its own process and streams the file; each client runs in a
fresh interpreter that reports its own peak RSS.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
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
        results = {}
        for name, code in (("owui-replay download", OURS), ("cookbook fetch", COOKBOOK)):
            out = HERE / "out" / "downloaded.json"
            results[name] = measure(code, url, out)
            out.unlink(missing_ok=True)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    print(f"{export.name}: {mb:.0f} MB")
    for name, (seconds, rss) in results.items():
        print(f"  {name:<22} {seconds:6.2f} s {mb / seconds:6.0f} MB/s   peak RSS {rss:6.0f} MB")
    print(json.dumps({k: {"seconds": s, "peak_rss_mb": r} for k, (s, r) in results.items()}))


if __name__ == "__main__":
    main()
