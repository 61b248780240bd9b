"""Run the Portkey stand-in from tests/ in its own process for benchmarks.

    python benchmarks/stub_server.py --latency 0.02 [--rate-limit 100]

Prints its base URL on the first line of stdout, serves until stdin is closed. Loopback only.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.portkey_stub import StubServer, StubState


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float)
    parser.add_argument("--retry-after")
    args = parser.parse_args()
    state = StubState(
        latency=args.latency, rate_limit=args.rate_limit, rate_limit_retry_after=args.retry_after
    )
    server = StubServer(state)
    server.request_queue_size = 128
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(server.url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.shutdown()


if __name__ == "__main__":
    main()
