"""Run the Open WebUI stand-in from tests/ in its own process, serving a file as the export.

    python benchmarks/openwebui_server.py EXPORT.json

The export is streamed from disk in 1 MiB chunks (chunked transfer encoding), so the server's
own memory stays small. Prints its base URL on the first line; serves until stdin closes.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.openwebui_stub import OwuiServer, OwuiState


def main() -> None:
    export = Path(sys.argv[1])

    def chunks():
        with open(export, "rb") as handle:
            while block := handle.read(1 << 20):
                yield block

    server = OwuiServer(OwuiState(export_chunks=chunks))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.url, flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
