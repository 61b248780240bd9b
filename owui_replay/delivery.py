"""Deliver JSONL payloads to Portkey: concurrent, paced, retried, recorded, interruptible.

Portkey has no idempotency key, so every repeated POST may be a duplicate rating. The rules:
- the delivery state records the intent (committed) before a request leaves, and the outcome
  (committed) as soon as the server answers; the audit journal follows each step;
- any HTTP answer makes the outcome known; no answer after the request left (timeout,
  dropped connection) is ambiguous: the line is retried and Portkey may hold an extra copy;
- a configuration failure (401/403, TLS, a 404/405 or redirect on the feedback URL, a 2xx
  that is not Portkey's) stops every worker at once and uses up no line;
- other 4xx refuse the payload: FEEDBACK.failed.jsonl and the state record it, the run goes on;
  a refusal is recorded only once every request sent before it was judged, and not when one
  of them stopped the run for its configuration: after a wrong URL, a server that left the
  404's body unread on a kept-alive connection answers the next request there with a 400
  about bytes that were never a payload;
- retryable failures that outlast --retries stop the run; those lines stay for the next run;
- Ctrl-C or SIGTERM stops taking new work; requests in flight get `stop_grace` seconds to be
  answered, then they are abandoned: their intent stays recorded (Portkey may hold them), and
  no worker writes to the state, the journal or the failed file after that.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from owui_replay.backoff import RETRY_STATUSES, backoff_delay, parse_retry_after
from owui_replay.delivery_state import DeliveryState, Rating
from owui_replay.errors import ExitCode
from owui_replay.journal import Journal
from owui_replay.option_names import option
from owui_replay.portkey_client import PortkeyClient, Reply, is_portkey_error
from owui_replay.ratelimit import RateLimiter
from owui_replay.settings import DeliveryOptions
from owui_replay.words import plural


class StopReason(Enum):
    """Why a run ended before every line had an outcome."""

    INTERRUPTED = "interrupted"
    AUTH = "auth"
    TLS = "tls"
    WRONG_URL = "wrong-url"
    REDIRECT = "redirect"
    GAVE_UP = "gave-up"
    UNREACHABLE = "unreachable"  # no connection on the run's first try: nothing to retry for
    ERROR = "error"


# a wrong configuration: no answer received while (or after) one of these stopped the run
# refuses a line, since the answer may be about the configuration, not about the payload
CONFIGURATION = frozenset(
    {
        StopReason.AUTH,
        StopReason.TLS,
        StopReason.WRONG_URL,
        StopReason.REDIRECT,
        StopReason.UNREACHABLE,
    }
)


def stop_outcome(reason: StopReason, detail: str, endpoint: str) -> tuple[ExitCode, str]:
    """The one place that maps a stop reason to an exit code and what the user reads."""
    if reason is StopReason.INTERRUPTED:
        return ExitCode.INTERRUPTED, detail
    if reason is StopReason.AUTH:
        return ExitCode.AUTH, (
            f"Portkey refused the API key ({detail}); stopped at once. Check PORTKEY_API_KEY "
            "and that it has the feedback scope."
        )
    if reason is StopReason.TLS:
        hint = (
            "the URL should start with http://"
            if "does not speak TLS" in detail
            else f"if Portkey sits behind a private CA, pass {option('ca_bundle', 'PATH')}"
        )
        return ExitCode.DELIVERY_FAILED, f"{detail}; stopped: {hint}."
    if reason is StopReason.UNREACHABLE:
        return ExitCode.NETWORK, (
            f"{endpoint}: {detail}; stopped at once, nothing was sent. Check the URL "
            f"({option('portkey_url')}, $PORTKEY_BASE_URL) and the network."
        )
    if reason is StopReason.WRONG_URL:
        suggestion = suggested_base(endpoint)
        hint = (
            f"; the base URL should end in /v1, e.g. {option('portkey_url', suggestion)}"
            if suggestion != endpoint
            else f"; check {option('portkey_url')} (Portkey's is https://api.portkey.ai/v1)"
        )
        return ExitCode.ENDPOINT, (
            f"{detail}: that is not Portkey's feedback API{hint}. Stopped; no line was used up."
        )
    if reason is StopReason.REDIRECT:
        return ExitCode.ENDPOINT, (
            f"{detail}; redirects are not followed (the key goes to no other host). Stopped; "
            f"no line was used up: pass the final URL as {option('portkey_url')}."
        )
    if reason is StopReason.GAVE_UP:
        return ExitCode.DELIVERY_FAILED, f"{detail}; stopped. Run again to resume."
    return ExitCode.DELIVERY_FAILED, f"{detail}; stopped."


def suggested_base(endpoint: str) -> str:
    """The base URL a Portkey URL most likely meant: up to and including /v1."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if "/v1/" in path + "/":
        path = path[: (path + "/").index("/v1/") + 3]
    else:
        path = path.removesuffix("/feedback") + "/v1"
    return parts._replace(path=path, query="", fragment="").geturl()


class Outcome(Enum):
    """What one HTTP answer means for the lines it carried."""

    ACKED = "acked"  # Portkey stored (POST) or updated (PUT) it
    REFUSED = "refused"  # a 4xx about this payload
    RETRY = "retry"  # try again later: 408, 429, 5xx, no answer
    STOP = "stop"  # the configuration is wrong: no request will do better


def judge_reply(reply: Reply, method: str) -> tuple[Outcome, StopReason | None]:
    status = reply.status
    if reply.tls_failure:
        return Outcome.STOP, StopReason.TLS
    if status is None:
        return Outcome.RETRY, None
    if 200 <= status < 300:
        return (
            (Outcome.ACKED, None) if reply.portkey_shaped else (Outcome.STOP, StopReason.WRONG_URL)
        )
    if 300 <= status < 400:
        return Outcome.STOP, StopReason.REDIRECT
    if status in (401, 403):
        return Outcome.STOP, StopReason.AUTH
    # POST /feedback exists wherever Portkey is: a 404 or 405 means the URL is wrong. A PUT's
    # 404 in Portkey's own words is about that feedback id: a refusal of the line.
    if status == 405 or (status == 404 and (method == "POST" or not is_portkey_error(reply.body))):
        return Outcome.STOP, StopReason.WRONG_URL
    if status in RETRY_STATUSES or status >= 500 or status < 200:
        return Outcome.RETRY, None
    return Outcome.REFUSED, None


@dataclass(frozen=True)
class Send:
    """One line this run delivers: POSTed, or PUT to the Portkey feedback that holds it."""

    line: int
    rating: Rating
    put_id: str | None = None


@dataclass(frozen=True)
class Request:
    """One HTTP request's worth of lines (a batch), as it goes out and is retried."""

    sends: list[Send]
    raws: list[bytes]
    method: str
    body: bytes

    @property
    def lines(self) -> list[int]:
        return [s.line for s in self.sends]

    @property
    def ratings(self) -> list[Rating]:
        return [s.rating for s in self.sends]


@dataclass
class DeliveryStats:
    """What a delivery run did: the counts of the summary, and why it stopped."""

    posted: int = 0  # lines Portkey acknowledged for a POST
    updated: int = 0  # lines Portkey acknowledged for a PUT
    refused: int = 0
    retried: int = 0  # retry attempts
    unanswered: int = 0  # POST attempts that got no answer (each may have stored a copy)
    extra_copies: int = 0  # copies beyond one that Portkey may hold of lines acknowledged now
    throttled: int = 0  # 429s, as counted by the pacer (filled in at the end of the run)
    abandoned: int = 0  # requests still unanswered when a stop signal's grace ran out
    stop_reason: StopReason | None = None  # None: ran to the end
    stop_detail: str = ""

    @property
    def acked(self) -> int:
        return self.posted + self.updated


class FailedFile:
    """FEEDBACK.failed.jsonl: payloads Portkey refused, with status and response."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: Any = None

    def add(self, line: int, raw: bytes, reply: Reply, endpoint: str) -> None:
        entry = {
            "line": line,
            "endpoint": endpoint,
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


@dataclass
class Flight:
    """A request between taking off (it may be sent) and landing (its answer is judged)."""

    request: Request
    intended: bool = False  # its intent is recorded: from here on it may have been sent


class Deliverer:
    """Sends lines to Portkey with concurrent workers, a shared pacer and retries,
    committing the intent before each request and the outcome after each answer."""

    poll_seconds = 0.05  # how often run() looks whether its workers are done (listen: less)

    def __init__(
        self,
        client: PortkeyClient,
        state: DeliveryState,
        journal: Journal,
        failed: FailedFile,
        options: DeliveryOptions,
        *,
        on_progress: Callable[[DeliveryStats], None] | None = None,
        approved_by: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self.journal = journal
        self.failed = failed
        self.options = options
        self.stats = DeliveryStats()
        self.stop = threading.Event()
        self.limiter = RateLimiter(options.rate, burst=1)
        self._on_progress = on_progress
        self._approved_by = approved_by
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._acks: deque[float] = deque()  # acknowledgement times within the last second
        self._work: Iterator[list[tuple[Send, bytes]]] | None = None
        self._live = 0  # workers still running
        self._changed = threading.Condition(self._lock)  # a flight landed, a writer left
        self._flights: dict[int, Flight] = {}  # by take-off order
        self._next_flight = 0
        self._heard = False  # the server has answered once in this run
        self._writers = 0  # workers writing to the state, the journal or the failed file
        self._abandoned = False  # the run ended under workers still waiting for answers
        self._left_behind: list[Request] | None = None  # their requests, once abandoned

    # -- the run ----------------------------------------------------------------------

    def run(self, lines: Iterator[tuple[Send, bytes]]) -> DeliveryStats:
        """Deliver every line, or stop early (stats.stop_reason says why)."""
        self._work = _batches(lines, self.options.batch_size)
        # Wait with sleep, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C or
        # SIGTERM can mark a running thread as finished, and the state would then be
        # closed under a request still in flight. A signal while the workers start is
        # handled like one later (it used to leave started workers running unwatched).
        try:
            for i in range(self.options.concurrency):
                with self._lock:
                    self._live += 1  # before start: the worker counts itself out at its end
                threading.Thread(target=self._worker, name=f"replay-{i}", daemon=True).start()
            while self._live:
                time.sleep(self.poll_seconds)
                self._progress()
        except KeyboardInterrupt:
            self._halt(StopReason.INTERRUPTED, "interrupted: no request was left without an answer")
            self._land_or_abandon()
        self.stats.throttled = self.limiter.throttled
        self._progress()
        return self.stats

    def _land_or_abandon(self) -> None:
        """After a stop signal: give in-flight requests `stop_grace` seconds, then leave them
        (a second signal leaves them at once), whatever the server does."""
        deadline = time.monotonic() + self.options.stop_grace
        try:
            while self._live and time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            pass
        while self._live:
            try:
                return self._abandon()
            except KeyboardInterrupt:  # a further signal while abandoning: finish abandoning
                continue

    def _abandon(self) -> None:
        """Stop every worker from writing, then say which requests got no answer: their
        intent stays in the state, so the next run announces them as uncertain."""
        with self._lock:
            self._abandoned = True
            while self._writers:
                self._changed.wait(0.05)
            if self._left_behind is None:  # once, even when a further signal came in between
                self._left_behind = [f.request for f in self._flights.values() if f.intended]
                self._flights.clear()
            flights = self._left_behind
        why = "abandoned at the stop without an answer (Portkey may hold it)"
        for request in flights:
            self.journal.retry(request.lines, why, ambiguous=True)
        posts = sum(1 for r in flights if r.method == "POST")
        self.stats.abandoned = len(flights)
        self.stats.unanswered += posts
        if flights and self.stats.stop_reason is StopReason.INTERRUPTED:
            self.stats.stop_detail = (
                f"interrupted: left {plural(len(flights), 'request')} without an answer after "
                f"{self.options.stop_grace:g} s; Portkey may hold them: the next run announces "
                "them as uncertain and sends them again"
            )

    @contextmanager
    def _recording(self) -> Iterator[bool]:
        """Yields whether this worker may still write to the state, journal or failed file
        (False once the run abandoned it); the abandon waits for the writes under way."""
        with self._lock:
            allowed = not self._abandoned
            if allowed:
                self._writers += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self._writers -= 1
                    self._changed.notify_all()

    def _halt(self, reason: StopReason, detail: str) -> None:
        with self._lock:
            if self.stats.stop_reason is None:
                self.stats.stop_reason = reason
                self.stats.stop_detail = detail
        self.stop.set()

    def _next_batch(self) -> list[tuple[Send, bytes]] | None:
        with self._lock:
            if self.stop.is_set() or self._work is None:
                return None
            return next(self._work, None)

    def _worker(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._deliver(self._request(batch))
        except BaseException as exc:  # never die silently: stop the run and say why
            self._halt(StopReason.ERROR, f"worker failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._live -= 1

    # -- one request ------------------------------------------------------------------

    def _request(self, batch: list[tuple[Send, bytes]]) -> Request:
        sends = [send for send, _ in batch]
        raws = [raw for _, raw in batch]
        if sends[0].put_id is not None:  # a changed rating: update what Portkey has
            return Request(sends, raws, "PUT", _without_trace_id(raws[0]))
        body = b"[" + b",".join(raws) + b"]" if self.options.batch_size > 1 else raws[0]
        return Request(sends, raws, "POST", body)

    def _deliver(self, request: Request) -> None:
        """Send one request until it has an outcome, or the run stops."""
        attempt = 0
        while True:
            if not self.limiter.acquire(self.stop):
                return  # stopped before sending: nothing in flight
            number = self._take_off(request)
            if number is None:
                return  # the run stopped: send nothing more
            try:
                sent = self._attempt(request, number)
                if sent is None:
                    return  # abandoned before the intent was recorded: nothing left
                reply, sent_at = sent
                outcome, reason = self._judge(reply, request.method)
                if reason is not None:  # every other worker stops before it judges more
                    self._halt(reason, self._stop_detail(request, reply, reason))
                elif outcome is Outcome.REFUSED:
                    self._wait_for_earlier(number)
            finally:
                self._land(number)
            if outcome is Outcome.ACKED:
                return self._acknowledge(request, reply)
            if outcome is Outcome.REFUSED:
                return self._refused(request, reply)
            if outcome is Outcome.STOP:
                return self._stopped(request, reply)
            attempt += 1
            delay = self._retry_delay(request, reply, attempt, sent_at)
            if delay is None or self.stop.wait(delay):
                return  # gave up, or interrupted while backing off: the state says so

    def _judge(self, reply: Reply, method: str) -> tuple[Outcome, StopReason | None]:
        """judge_reply, and one rule of the run's: a server that has never answered and
        cannot be connected to (refused, no such host) stops the run at once; retrying a
        wrong address only delays the message. Once it has answered, a refusal is a restart
        or a blip, and retried."""
        outcome, reason = judge_reply(reply, method)
        with self._lock:
            if reply.status is not None:
                self._heard = True
            elif reason is None and reply.unreachable and not self._heard:
                return Outcome.STOP, StopReason.UNREACHABLE
        return outcome, reason

    def _take_off(self, request: Request) -> int | None:
        """Register the request as in flight, unless the run stopped; its take-off number."""
        with self._lock:
            if self.stop.is_set():
                return None
            number = self._next_flight
            self._next_flight += 1
            self._flights[number] = Flight(request)
            return number

    def _land(self, number: int) -> None:
        with self._lock:
            self._flights.pop(number, None)
            self._changed.notify_all()

    def _wait_for_earlier(self, number: int) -> None:
        """Until every request that took off before this one was judged: one of them may
        stop the run for a configuration failure that this answer is a symptom of."""
        with self._lock:
            while not self._abandoned and any(n < number for n in self._flights):
                self._changed.wait(0.25)

    def _attempt(self, request: Request, number: int) -> tuple[Reply, float] | None:
        """Record the intent, then send: a kill at any point leaves the state knowing."""
        with self._recording() as allowed:
            if not allowed:
                return None
            self.state.intend(request.ratings, request.method, self._approved_by)
            self.journal.send(request.lines, request.method)
            with self._lock:
                self._flights[number].intended = True
        sent_at = time.monotonic()
        put_id = request.sends[0].put_id
        if put_id is not None:
            return self.client.put(put_id, request.body), sent_at
        return self.client.post(request.body, len(request.sends)), sent_at

    def _retry_delay(
        self, request: Request, reply: Reply, attempt: int, sent_at: float
    ) -> float | None:
        """After a retryable outcome: record it, slow down on 429, and say how long to wait
        before the next attempt (None: retries are used up and the run stops)."""
        with self._recording() as allowed:
            if not allowed:
                return None
            if not reply.ambiguous:  # answered, or surely never sent: no copy to announce
                self.state.answered(request.ratings, request.method)
            self.journal.retry(request.lines, reply.describe(), ambiguous=reply.ambiguous)
        with self._lock:
            if reply.ambiguous and request.method == "POST":
                self.stats.unanswered += 1
        retry_after = parse_retry_after(reply.retry_after)
        if reply.status == 429:
            pause = min(retry_after, self.options.max_retry_after) if retry_after else None
            self.limiter.throttle(pause, self._acknowledged_last_second(), sent_at)
        if attempt > self.options.retries:
            self._halt(
                StopReason.GAVE_UP,
                f"gave up after {attempt} attempts on line {request.lines[0] + 1}: "
                f"{reply.describe()}",
            )
            return None
        with self._lock:
            self.stats.retried += 1  # the attempt that gave up is not a retry
        return backoff_delay(
            attempt - 1,
            base=self.options.backoff_base,
            cap=self.options.backoff_cap,
            retry_after=retry_after,
            max_retry_after=self.options.max_retry_after,
            rng=self._rng,
        )

    def _acknowledge(self, request: Request, reply: Reply) -> None:
        ids: list[str | None] = list(reply.feedback_ids or [])
        if request.method == "PUT":
            ids = [request.sends[0].put_id]
        ids += [None] * (len(request.sends) - len(ids))
        with self._recording() as allowed:
            if not allowed:
                return
            extra = self.state.acknowledged(request.ratings, ids, request.method)
            self.journal.ack(request.lines, [i or "" for i in ids])
        now = time.monotonic()
        with self._lock:
            if request.method == "PUT":
                self.stats.updated += len(request.sends)
            else:
                self.stats.posted += len(request.sends)
            self.stats.extra_copies += extra
            self._acks.append(now)  # requests, not lines: the server limits requests
            while self._acks[0] < now - 1.0:
                self._acks.popleft()
        self.limiter.succeeded()

    def _refused(self, request: Request, reply: Reply) -> None:
        """A 4xx for a payload; a refused batch is split to find the bad lines. Judged after
        every earlier request: when one of them stopped the run for its configuration, the
        answer is not about this payload, and the line is not used up."""
        with self._lock:
            configuration = self.stats.stop_reason in CONFIGURATION
        with self._recording() as allowed:
            if not allowed:
                return
            if configuration or len(request.sends) > 1:
                self.state.answered(request.ratings, request.method)
                why = (
                    f"{reply.describe()}, after the run stopped for its configuration; "
                    "not recorded as refused"
                    if configuration
                    else f"batch refused ({reply.describe()}); splitting"
                )
                self.journal.retry(request.lines, why, False)
            else:
                send = request.sends[0]
                self.state.refused(send.rating, request.method, reply.status, reply.describe())
                self.failed.add(send.line, request.raws[0], reply, self.state.endpoint)
                self.journal.fail([send.line], reply.status)
                with self._lock:
                    self.stats.refused += 1
        if configuration or len(request.sends) == 1:
            return
        for send, raw in zip(request.sends, request.raws, strict=True):
            if self.stop.is_set():
                return
            self._deliver(Request([send], [raw], "POST", raw))

    def _stopped(self, request: Request, reply: Reply) -> None:
        """A configuration failure: answered (or never sent), so nothing was stored."""
        with self._recording() as allowed:
            if allowed:
                self.state.answered(request.ratings, request.method)
                self.journal.retry(request.lines, reply.describe(), ambiguous=False)

    def _stop_detail(self, request: Request, reply: Reply, reason: StopReason) -> str:
        """What stopped the run, naming the URL that was hit."""
        url = self.client.put_url(request.sends[0].put_id or "") if request.method == "PUT" else (
            self.client.url
        )  # fmt: skip
        if reason is StopReason.REDIRECT:
            where = urlsplit(reply.location or "").netloc or "the same host"
            detail = f"{request.method} {url} answered HTTP {reply.status}, a redirect to {where}"
        elif reason is StopReason.WRONG_URL:
            what = f"HTTP {reply.status}"
            if reply.status is not None and 200 <= reply.status < 300:
                what += " without Portkey's JSON answer"
            detail = f"{request.method} {url} answered {what}"
        else:
            detail = reply.describe()
        return detail

    def _acknowledged_last_second(self) -> float | None:
        """Requests the server acknowledged over the last second (None: too few to tell)."""
        now = time.monotonic()
        with self._lock:
            while self._acks and self._acks[0] < now - 1.0:
                self._acks.popleft()
            return float(len(self._acks)) if len(self._acks) >= 2 else None

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats)


def _without_trace_id(raw: bytes) -> bytes:
    """PUT /feedback/{id} takes value, weight and metadata; the trace stays as posted."""
    payload = json.loads(raw)
    payload.pop("trace_id", None)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _batches(lines: Iterator[tuple[Send, bytes]], size: int) -> Iterator[list[tuple[Send, bytes]]]:
    """Consecutive POST lines in groups of `size`; PUTs alone."""
    batch: list[tuple[Send, bytes]] = []
    for item in lines:
        if item[0].put_id is not None:
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
