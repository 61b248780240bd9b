"""Deliver JSONL payloads to Portkey: concurrent, paced, retried, journaled, interruptible.

Portkey has no idempotency key, so every repeated POST is a duplicate rating. The rules:
- a line is journaled as `send` before its request leaves, `ack` only after Portkey confirmed;
- a definite answer (any HTTP status) means the outcome is known; no answer after the request
  left (timeout, dropped connection) is ambiguous: it is retried, and counted as a possible
  duplicate;
- 401/403 stop every worker at once; other 4xx go to FEEDBACK.failed.jsonl and the run goes on;
- retryable failures that outlast --retries stop the run with the lines still unacknowledged,
  so a later run sends them (nothing is written off because a server was down).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.backoff import Verdict, backoff_delay, classify, parse_retry_after
from owui_replay.journal import Journal
from owui_replay.portkey_client import PortkeyClient, Reply
from owui_replay.ratelimit import RateLimiter

Batch = list[tuple[int, bytes]]


@dataclass(frozen=True)
class DeliveryOptions:
    concurrency: int = 16
    rate: float | None = None
    batch_size: int = 1
    retries: int = 8
    max_retry_after: float = 60.0
    backoff_base: float = 0.25
    backoff_cap: float = 20.0


@dataclass
class DeliveryStats:
    acked: int = 0
    failed: int = 0
    retried: int = 0  # retry attempts
    throttled: int = 0  # 429s, as counted by the pacer (filled in at the end of the run)
    possible_duplicates: set[int] = field(default_factory=set)  # retried after no answer
    stop_reason: str | None = None  # None: ran to the end
    stop_detail: str = ""


class FailedFile:
    """FEEDBACK.failed.jsonl: payloads Portkey refused, with status and response."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: Any = None

    def add(self, line: int, raw: bytes, reply: Reply) -> None:
        entry = {
            "line": line,
            "status": reply.status,
            "error": reply.describe(),
            "response": reply.body,
            "payload": json.loads(raw),
        }
        data = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self._handle is None:
                self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._handle.write(data)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._handle.close()
                self._handle = None


class Deliverer:
    def __init__(
        self,
        client: PortkeyClient,
        journal: Journal,
        failed: FailedFile,
        options: DeliveryOptions,
        *,
        on_progress: Callable[[DeliveryStats], None] | None = None,
        on_ack: Callable[[int, str | None], None] | None = None,
        put_ids: dict[int, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.failed = failed
        self.options = options
        self.stats = DeliveryStats()
        self.stop = threading.Event()
        self.limiter = RateLimiter(options.rate, burst=1)
        self._on_progress = on_progress
        self._on_ack = on_ack
        self._put_ids = put_ids or {}  # line -> Portkey feedback id to update instead of POST
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._acks: deque[float] = deque()  # acknowledgement times within the last second
        self._first_ack: float | None = None
        self._work: Iterator[Batch] | None = None
        self._live = 0  # workers still running

    # -- the run ----------------------------------------------------------------------

    def run(self, lines: Iterator[tuple[int, bytes]]) -> DeliveryStats:
        """Deliver every line, or stop early (stats.stop_reason says why)."""
        self._work = _batches(lines, self.options.batch_size, self._put_ids)
        self._live = self.options.concurrency
        for i in range(self.options.concurrency):
            threading.Thread(target=self._worker, name=f"replay-{i}", daemon=True).start()
        # Wait with sleep, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C or
        # SIGTERM can mark a running thread as finished, and the journal would then be
        # closed under a request still in flight.
        try:
            while self._live:
                time.sleep(0.05)
                self._progress()
        except KeyboardInterrupt:
            self._halt("interrupted", "interrupted: in-flight requests were allowed to finish")
            while self._live:
                time.sleep(0.01)
        self.stats.throttled = self.limiter.throttled
        self._progress()
        return self.stats

    def _halt(self, reason: str, detail: str) -> None:
        with self._lock:
            if self.stats.stop_reason is None:
                self.stats.stop_reason = reason
                self.stats.stop_detail = detail
        self.stop.set()

    def _next_batch(self) -> Batch | None:
        with self._lock:
            if self.stop.is_set() or self._work is None:
                return None
            return next(self._work, None)

    def _worker(self) -> None:
        as_array = self.options.batch_size > 1
        try:
            while (batch := self._next_batch()) is not None:
                self._deliver(batch, as_array)
        except BaseException as exc:  # never die silently: stop the run and say why
            self._halt("error", f"worker failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._live -= 1

    # -- one batch ----------------------------------------------------------------------

    def _deliver(self, batch: Batch, as_array: bool) -> None:
        """Send one request (an object, or Portkey's array form) until it has an outcome."""
        lines = [number for number, _ in batch]
        raws = [raw for _, raw in batch]
        put_id = self._put_ids.get(lines[0]) if len(batch) == 1 else None
        if put_id is not None:  # a changed rating: update what Portkey has (idempotent)
            body = _without_trace_id(raws[0])
        else:
            body = b"[" + b",".join(raws) + b"]" if as_array else raws[0]
        attempt = 0
        while True:
            if not self.limiter.acquire(self.stop):
                return  # stopped before sending: nothing in flight
            self.journal.send(lines)
            sent_at = time.monotonic()
            if put_id is not None:
                reply = self.client.put(put_id, body)
                if reply.status is not None and 200 <= reply.status < 300:
                    reply.feedback_ids = [put_id]
            else:
                reply = self.client.post(body, len(lines))
            verdict = classify(reply.status) if reply.status is not None else Verdict.RETRY
            if reply.tls_failure or verdict is Verdict.AUTH:
                # stop everyone: a bad certificate or key will not fix itself (and the
                # request was not stored: nothing sent, or refused)
                self.journal.retry(lines, reply.describe(), ambiguous=False)
                self._halt("tls" if reply.tls_failure else "auth", reply.describe())
                return
            if verdict is Verdict.OK:
                self._acknowledge(lines, reply)
                return
            if verdict is Verdict.FAIL:
                self._refused(batch, reply)
                return
            attempt += 1
            self.journal.retry(lines, reply.describe(), ambiguous=reply.ambiguous)
            with self._lock:
                self.stats.retried += 1
                if reply.ambiguous:
                    self.stats.possible_duplicates.update(lines)
            retry_after = parse_retry_after(reply.retry_after)
            if reply.status == 429:
                pause = min(retry_after, self.options.max_retry_after) if retry_after else None
                self.limiter.throttle(pause, self._accepted_rate(), sent_at)
            if attempt > self.options.retries:
                self._halt(
                    "gave-up",
                    f"gave up after {attempt} attempts on line {lines[0] + 1}: {reply.describe()}",
                )
                return
            delay = backoff_delay(
                attempt - 1,
                base=self.options.backoff_base,
                cap=self.options.backoff_cap,
                retry_after=retry_after,
                max_retry_after=self.options.max_retry_after,
                rng=self._rng,
            )
            if self.stop.wait(delay):
                return  # interrupted while backing off: the journal already says retry

    def _acknowledge(self, lines: list[int], reply: Reply) -> None:
        ids = reply.feedback_ids or []
        self.journal.ack(lines, ids)
        if self._on_ack is not None:
            for i, line in enumerate(lines):
                self._on_ack(line, ids[i] if i < len(ids) else None)
        now = time.monotonic()
        with self._lock:
            self.stats.acked += len(lines)
            self._acks.append(now)  # requests, not lines: the server limits requests
            if self._first_ack is None:
                self._first_ack = now
            while self._acks[0] < now - 1.0:
                self._acks.popleft()
        self.limiter.succeeded()

    def _refused(self, batch: Batch, reply: Reply) -> None:
        """A 4xx for a batch: find the bad lines by sending them one by one."""
        lines = [number for number, _ in batch]
        if len(batch) > 1:
            self.journal.retry(lines, f"batch refused ({reply.describe()}); splitting", False)
            for item in batch:
                if self.stop.is_set():
                    return
                self._deliver([item], as_array=False)
            return
        number, raw = batch[0]
        self.failed.add(number, raw, reply)
        self.journal.fail([number], reply.status)
        with self._lock:
            self.stats.failed += 1

    def _accepted_rate(self) -> float | None:
        """Requests per second the server acknowledged over the last second."""
        now = time.monotonic()
        with self._lock:
            while self._acks and self._acks[0] < now - 1.0:
                self._acks.popleft()
            if len(self._acks) < 2 or self._first_ack is None:
                return None
            return len(self._acks) / min(1.0, max(now - self._first_ack, 1e-3))

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats)


def _without_trace_id(raw: bytes) -> bytes:
    """PUT /feedback/{id} takes value, weight and metadata; the trace stays as posted."""
    payload = json.loads(raw)
    payload.pop("trace_id", None)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _batches(
    lines: Iterator[tuple[int, bytes]], size: int, singles: dict[int, str]
) -> Iterator[Batch]:
    """Consecutive POST lines in groups of `size`; lines in `singles` (PUTs) alone."""
    batch: Batch = []
    for item in lines:
        if item[0] in singles:
            if batch:
                yield batch
                batch = []
            yield [item]
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
