"""The per-file audit journal: what each replay run of FEEDBACK.jsonl did, line by line.

It records history for people; it is never read to decide what to send. That is the delivery
state's job (delivery_state.py), which is per endpoint and shared by every file. One JSON
object per line, beside the input (FEEDBACK.journal.jsonl):

    {"t": "header", "version": 2, "input": NAME, "input_sha256": HEX, "lines": N}
    {"t": "run", "pid": ..., "started": ISO, "options": {...}}   each invocation
    {"t": "send", "lines": [3, 4], "method": "POST"}              before the request leaves
    {"t": "retry", "lines": [3, 4], "why": "HTTP 429", "ambiguous": false}
    {"t": "ack", "lines": [3, 4], "ids": ["fb_1", "fb_2"]}        after Portkey confirmed
    {"t": "fail", "lines": [5], "status": 400}                    refused; see FEEDBACK.failed.jsonl
    {"t": "end", "reason": "complete" | "interrupted" | "auth" | ...}

Each event is one write(2) on an O_APPEND descriptor; fsync in groups and at exit. A journal
written for another version of the file (regenerated) is set aside with a timestamp. Its `run`
and `ack` events are also the evidence that keeps a lost delivery state from being a silent
fresh start (evidence.py). A write that fails (a full disk) is one StateError naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from owui_replay.errors import InputError, StateError

JOURNAL_VERSION = 2  # 1: 0.1.0, when the journal was also the resume state; still appendable
READABLE_VERSIONS = frozenset({1, 2})


def set_aside(path: Path) -> Path:
    """Rename an old journal out of the way, keeping it for the audit trail."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.{stamp}")
    os.replace(path, target)
    return target


def journal_header(path: Path) -> dict[str, Any]:
    """The header of an existing journal; a clear error for a damaged or newer one."""
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        header = json.loads(first)
    except ValueError:
        raise InputError(f"{path}: not an owui-replay journal (line 1 is not JSON)") from None
    if not isinstance(header, dict) or header.get("t") != "header":
        raise InputError(f"{path}: not an owui-replay journal (no header)")
    version = header.get("version")
    if version not in READABLE_VERSIONS:
        raise InputError(
            f"{path}: journal format {version!r} is not one this owui-replay writes "
            f"({sorted(READABLE_VERSIONS)}); move it away or upgrade owui-replay"
        )
    return header


class Journal:
    """Appends a run's events to FEEDBACK.journal.jsonl, for people; never read to decide."""

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
        self.failure: StateError | None = None  # the first failed write, even a worker's
        self.set_aside_as: Path | None = None
        self._lock = threading.Lock()
        self._fsync_every = fsync_every
        self._fsync_seconds = fsync_seconds
        self._unsynced = 0
        self._last_sync = time.monotonic()
        existing = path.exists() and path.stat().st_size > 0
        if existing and journal_header(path).get("input_sha256") != input_sha256:
            self.set_aside_as = set_aside(path)  # a regenerated file: a new history
        existing = path.exists() and path.stat().st_size > 0
        self._fd = -1
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._failed(exc) from None
        if not existing:  # a 0-byte journal (killed right after creating it) gets its header
            self._write(
                {"t": "header", "version": JOURNAL_VERSION, "input": input_name,
                 "input_sha256": input_sha256, "lines": lines}
            )  # fmt: skip
            self.sync()

    def start_run(self, options: dict[str, Any]) -> None:
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._write({"t": "run", "pid": os.getpid(), "started": started, "options": options})
        self.sync()

    def send(self, lines: list[int], method: str) -> None:
        self._write({"t": "send", "lines": lines, "method": method})

    def retry(self, lines: list[int], why: str, ambiguous: bool) -> None:
        self._write({"t": "retry", "lines": lines, "why": why, "ambiguous": ambiguous})

    def ack(self, lines: list[int], ids: list[str]) -> None:
        self._write({"t": "ack", "lines": lines, "ids": ids})

    def fail(self, lines: list[int], status: int | None) -> None:
        self._write({"t": "fail", "lines": lines, "status": status})

    def end(self, reason: str) -> None:
        self._write({"t": "end", "reason": reason})
        self.sync()

    def _failed(self, exc: OSError) -> StateError:
        error = StateError(
            f"{self.path}: cannot write the replay journal: {exc.strerror or exc}"
            + ("; is the disk full?" if exc.errno in (errno.ENOSPC, errno.EFBIG) else "")
        )
        self.failure = self.failure or error
        return error

    def _write(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                if os.write(self._fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._unsynced += 1
                now = time.monotonic()
                if (
                    self._unsynced >= self._fsync_every
                    or now - self._last_sync >= self._fsync_seconds
                ):
                    os.fsync(self._fd)
                    self._unsynced = 0
                    self._last_sync = now
            except OSError as exc:
                raise self._failed(exc) from None

    def sync(self) -> None:
        with self._lock:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise self._failed(exc) from None
            self._unsynced = 0
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
