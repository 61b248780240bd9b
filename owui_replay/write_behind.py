"""Write and hash a download on a second thread while the first reads the socket.

File writes and sha256 release the GIL (hashlib does for anything over 2 kB), so this thread
runs on the other core while the reading thread follows the array's shape: the download goes
at the speed of the slower of the two, not of their sum.
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType

from owui_replay.atomic import HashedWriter

_DEPTH = 8  # chunks in flight: 8 MiB at most


class WriteBehind:
    """put() chunks; they are written to WRITER in order. Leaving the block waits for the
    writes, and raises what a write raised."""

    def __init__(self, writer: HashedWriter) -> None:
        self._writer = writer
        self._queue: queue.Queue[bytes | None] = queue.Queue(_DEPTH)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def put(self, chunk: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self._queue.put(chunk)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._failure is None:
                try:
                    self._writer.write_chunk(chunk)
                except BaseException as exc:  # handed to the reading thread
                    self._failure = exc

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._queue.put(None)
        self._thread.join()
        if error is None and self._failure is not None:
            raise self._failure
