"""Run the Open WebUI stand-in from tests/ in its own process, serving a file as the export.

    python benchmarks/openwebui_server.py EXPORT.json [--built [--wait SECONDS]]

By default the export is streamed from disk in 1 MiB chunks (chunked transfer encoding) as soon
as it is asked for: the network, not the server, sets the pace. With --built it sends the way a
real Open WebUI 0.12.4 does: the whole response is in memory before the first byte (here read
from disk, ~0.2 s for 500 MB; the real server spends 3-7 s building 317 MB from its database,
which adds the same wait to every client), then it goes out in one write with a Content-Length.
--wait adds that wait: the time the real server takes to build the body, as measured.
Prints its base URL on the first line; serves until stdin closes.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.openwebui_stub import OwuiServer, OwuiState


def main() -> None:
    export = Path(sys.argv[1])

    def chunks():
        with open(export, "rb") as handle:
            while block := handle.read(1 << 20):
                yield block

    def built() -> bytes:
        body = export.read_bytes()
        if "--wait" in sys.argv:
            time.sleep(float(sys.argv[sys.argv.index("--wait") + 1]))
        return body

    if "--built" in sys.argv[2:]:
        server = OwuiServer(OwuiState(export_body=built))
    else:
        server = OwuiServer(OwuiState(export_chunks=chunks))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.url, flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
