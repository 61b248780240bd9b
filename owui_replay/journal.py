"""The append-only delivery journal that makes replay resumable without losing a rating.

One JSON object per line, beside the input (FEEDBACK.journal.jsonl):

    {"t": "header", "version": 1, "input": NAME, "input_sha256": HEX, "lines": N}
    {"t": "run", "pid": ..., "started": ISO}          each invocation
    {"t": "send", "lines": [3, 4]}                     before the request leaves
    {"t": "retry", "lines": [3, 4], "why": "HTTP 429", "ambiguous": false}
    {"t": "ack", "lines": [3, 4], "ids": ["fb_1", "fb_2"]}   after Portkey confirmed
    {"t": "fail", "lines": [5], "status": 400}         refused; details in FEEDBACK.failed.jsonl
    {"t": "end", "reason": "complete" | "interrupted" | "auth" | "gave-up"}

Every event is one write(2) on an O_APPEND descriptor, so it survives the process being
killed; fsync happens in groups (every `fsync_every` events or `fsync_seconds`) and at exit,
which covers power loss up to the last group. A `send` without a later `ack` or `fail` is a
line whose fate is unknown: it was in flight when a run died. A torn last line (power loss
mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from owui_replay.errors import InputError

JOURNAL_VERSION = 1


@dataclass
class JournalState:
    """What earlier runs achieved, read back from the journal."""

    acked: dict[int, str | None] = field(default_factory=dict)  # line -> Portkey feedback id
    failed: set[int] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)  # last event was `send`
    ambiguous: set[int] = field(default_factory=set)  # a request went unanswered
    runs: int = 0

    @property
    def uncertain(self) -> set[int]:
        """Neither acknowledged nor refused, and maybe stored: in flight when a run died,
        or left after a request that got no answer."""
        return (self.in_flight | self.ambiguous) - self.acked.keys() - self.failed


class Journal:
    def __init__(
        self,
        path: Path,
        *,
        input_name: str,
        input_sha256: str,
        lines: int,
        fsync_every: int = 64,
        fsync_seconds: float = 0.5,
    ) -> None:
        self.path = path
        self.state = JournalState()
        self._lock = threading.Lock()
        self._fsync_every = fsync_every
        self._fsync_seconds = fsync_seconds
        self._unsynced = 0
        self._last_sync = time.monotonic()
        existing = path.exists() and path.stat().st_size > 0
        if existing:
            self.state = read_journal(path, input_sha256)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if not existing:
            self._write(
                {"t": "header", "version": JOURNAL_VERSION, "input": input_name,
                 "input_sha256": input_sha256, "lines": lines}
            )  # fmt: skip
            self.sync()

    def start_run(self, options: dict[str, Any]) -> None:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._write({"t": "run", "pid": os.getpid(), "started": started, "options": options})
        self.sync()

    def send(self, lines: list[int]) -> None:
        self._write({"t": "send", "lines": lines})

    def retry(self, lines: list[int], why: str, ambiguous: bool) -> None:
        self._write({"t": "retry", "lines": lines, "why": why, "ambiguous": ambiguous})

    def ack(self, lines: list[int], ids: list[str]) -> None:
        self._write({"t": "ack", "lines": lines, "ids": ids})

    def fail(self, lines: list[int], status: int | None) -> None:
        self._write({"t": "fail", "lines": lines, "status": status})

    def end(self, reason: str) -> None:
        self._write({"t": "end", "reason": reason})
        self.sync()

    def _write(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            self._unsynced += 1
            now = time.monotonic()
            if self._unsynced >= self._fsync_every or now - self._last_sync >= self._fsync_seconds:
                os.fsync(self._fd)
                self._unsynced = 0
                self._last_sync = now

    def sync(self) -> None:
        with self._lock:
            os.fsync(self._fd)
            self._unsynced = 0
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def read_journal(path: Path, input_sha256: str | None = None) -> JournalState:
    """Replay the journal's events; refuses a journal written for different input."""
    state = JournalState()
    with open(path, "rb") as handle:
        raw_lines = handle.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    elif raw_lines:
        raw_lines.pop()  # a torn last write: the event never completed
    for number, raw in enumerate(raw_lines, 1):
        try:
            event = json.loads(raw)
        except ValueError:
            raise InputError(f"{path}: line {number} is not JSON; the journal is damaged") from None
        kind = event.get("t")
        if number == 1:
            if kind != "header":
                raise InputError(f"{path}: not an owui-replay journal (no header)")
            if input_sha256 is not None and event.get("input_sha256") != input_sha256:
                raise InputError(
                    f"{path}: this journal belongs to a different version of "
                    f"{event.get('input')} (sha256 {str(event.get('input_sha256'))[:12]}…); "
                    "move it away, or pass --restart to start over"
                )
        elif kind == "send":
            state.in_flight.update(event["lines"])
        elif kind == "ack":
            ids = event.get("ids") or []
            for i, line in enumerate(event["lines"]):
                state.acked[line] = ids[i] if i < len(ids) else None
            state.in_flight.difference_update(event["lines"])
        elif kind == "fail":
            state.failed.update(event["lines"])
            state.in_flight.difference_update(event["lines"])
        elif kind == "retry":  # the attempt has an outcome: refused for now, or unanswered
            state.in_flight.difference_update(event["lines"])
            if event.get("ambiguous"):
                state.ambiguous.update(event["lines"])
        elif kind == "run":
            state.runs += 1
    return state
