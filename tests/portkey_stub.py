"""A Portkey-compatible feedback server on 127.0.0.1 for tests, with fault injection.

Implements POST {base}/feedback (one object or an array; feedback_ids in input order) and
PUT {base}/feedback/{id}, checks x-portkey-api-key, parses bodies as Node's JSON.parse does (a
leading UTF-8 BOM is a 400) and validates them as Portkey documents them, and can be told to
misbehave: latency, 429 (with or without Retry-After), 5xx, 401,
400, a server-side rate limit, and connections dropped before or after storing.
"""

from __future__ import annotations

import copy
import json
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

from tests.serving import serving

API_KEY = "pk-test-Zm9vYmFyLXNlY3JldC1rZXk"


@dataclass
class Fault:
    """What to do with one request instead of (or besides) storing it."""

    kind: (
        str  # "429", "500", "502", "503", "401", "403", "400", "drop-before", "drop-after", "slow"
    )
    retry_after: str | None = None
    seconds: float = 0.0  # for "slow": sleep this long after storing, before answering


@dataclass
class StubState:
    api_key: str = API_KEY
    latency: float = 0.0
    rate_limit: float | None = None  # requests per second the server accepts
    rate_limit_retry_after: str | None = None
    omit_feedback_ids: bool = False  # acknowledge without saying which feedback was created
    faults: list[Fault] = field(default_factory=list)  # consumed one per request, in order
    stored: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: Counter[int | str] = field(default_factory=Counter)
    requests: int = 0
    started: float = field(default_factory=time.monotonic)
    throttled_at: list[float] = field(default_factory=list)  # seconds since start, per 429
    arrivals: list[float] = field(default_factory=list)  # seconds since start, per request
    in_flight: int = 0
    max_in_flight: int = 0
    auth_headers_seen: list[str] = field(default_factory=list)
    # called with ("received" | "stored", body) while a POST or PUT is handled: a test can kill
    # the client at an exact point, or look at what the client had recorded by then
    hook: Callable[[str, Any], None] | None = None
    unknown_path: str = "json-404"  # or "html-200" (a web app's catch-all page), "405"
    redirect_to: str | None = None  # answer every POST/PUT with 307 to this URL
    forbidden: bool = False  # answer every POST/PUT with 403 (a key without the feedback scope)
    # answer a wrong path, key, scope or a redirect before reading the body (see
    # Handler._refused_before_body); False: the body is always read first
    route_before_body: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _window: deque[float] = field(default_factory=deque)  # acceptance times, last second

    def trace_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(p["trace_id"] for _, p in self.stored)

    def feedback_counts(self) -> Counter[str]:
        """How often each Open WebUI feedback id was stored (>1: a duplicate rating)."""
        with self.lock:
            return Counter(
                (p.get("metadata") or {}).get("feedback_id", p["trace_id"]) for _, p in self.stored
            )

    def holdings(self) -> dict[str, list[dict[str, Any]]]:
        """What Portkey holds per feedback id: each stored copy with its PUTs applied."""
        with self.lock:
            copies = {pid: copy.deepcopy(p) for pid, p in self.stored}
            for pid, body in self.updates:
                copies[pid].update(body)
        out: dict[str, list[dict[str, Any]]] = {}
        for item in copies.values():
            out.setdefault(item["metadata"]["feedback_id"], []).append(item)
        return out

    def take_fault(self) -> Fault | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def over_rate(self) -> bool:
        """A sliding one-second window, as rate-limiting gateways keep it: a request is
        refused while `rate_limit` requests were accepted within the last second."""
        if self.rate_limit is None:
            return False
        with self.lock:
            now = time.monotonic()
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                return True
            self._window.append(now)
            return False


def payload_problem(item: Any) -> str | None:
    """Why Portkey would refuse this feedback object, or None."""
    if not isinstance(item, dict):
        return "feedback must be an object"
    trace_id = item.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        return "trace_id is required and must be a string"
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, int) or not -10 <= value <= 10:
        return "value must be an integer between -10 and 10"
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        return "weight must be a number between 0 and 1"
    if "metadata" in item and not isinstance(item["metadata"], dict):
        return "metadata must be an object"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every response, which no real server does
    disable_nagle_algorithm = True
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def state(self) -> StubState:
        return self.server.state

    def do_GET(self) -> None:
        """GET /_stats: counters for a benchmark driving the stub from another process."""
        if self.path != "/_stats":
            return self._send(404, {"status": "failure", "message": "not found"})
        state = self.state
        with state.lock:
            stats = {
                "requests": state.requests,
                "stored": len(state.stored),
                "statuses": {str(k): v for k, v in state.statuses.items()},
                "max_in_flight": state.max_in_flight,
                "throttled_at": state.throttled_at,
            }
        data = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        state = self.state
        with state.lock:
            state.requests += 1
            state.arrivals.append(time.monotonic() - state.started)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.auth_headers_seen.append(self.headers.get("x-portkey-api-key", ""))
        try:
            self._respond(method)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _respond(self, method: str) -> None:
        state = self.state
        fault = state.take_fault()
        if fault and fault.kind == "drop-before":
            self.close_connection = True
            return  # closed without reading the body or answering: nothing stored
        base = self.server.base_path
        if state.route_before_body and self._refused_before_body(method, base):
            return None
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if state.hook is not None:
            state.hook("received", raw)
        if state.redirect_to is not None:
            return self._send(307, {}, {"Location": state.redirect_to})
        if state.latency:
            time.sleep(state.latency)
        if self.headers.get("x-portkey-api-key") != state.api_key or (
            fault and fault.kind == "401"
        ):
            return self._send(401, {"success": False, "data": {
                "message": "Invalid API Key", "errorCode": "AB01"}})  # fmt: skip
        if (fault and fault.kind == "403") or state.forbidden:
            return self._send(403, {"success": False, "data": {
                "message": "missing scope feedback.create", "errorCode": "AB03"}})  # fmt: skip
        if (fault and fault.kind == "429") or state.over_rate():
            retry_after = fault.retry_after if fault else state.rate_limit_retry_after
            headers = {"Retry-After": retry_after} if retry_after else {}
            return self._send(429, {"success": False, "data": {
                "message": "Too many requests", "errorCode": "AB06"}}, headers)  # fmt: skip
        if fault and fault.kind in ("500", "502", "503"):
            return self._send(int(fault.kind), {"status": "failure", "message": "upstream"})
        try:  # as Node's JSON.parse: UTF-8 text, and a BOM is not JSON
            body = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            message = "Unexpected token '\ufeff'" if raw.startswith(b"\xef\xbb\xbf") else str(exc)
            return self._send(400, {"status": "failure", "message": f"invalid JSON: {message}"})
        if method == "PUT" and self.path.startswith(base + "/feedback/"):
            return self._update(self.path.rsplit("/", 1)[1], body)
        if method != "POST" or self.path != base + "/feedback":
            return self._unknown_path()
        items = body if isinstance(body, list) else [body]
        problems = [p for p in map(payload_problem, items) if p]
        if fault and fault.kind == "400":
            problems.append("rejected by fault injection")
        if fault and fault.kind == "400-echo-key":  # a careless server quoting the credential
            problems.append(f"bad request for key {self.headers.get('x-portkey-api-key')}")
        if problems or not items:
            return self._send(
                400, {"status": "failure", "message": problems[0] if problems else "empty"}
            )
        ids = [f"fb_{uuid.uuid4().hex[:16]}" for _ in items]
        with state.lock:
            state.stored.extend(zip(ids, items, strict=True))
        if state.hook is not None:
            state.hook("stored", items)
        if fault and fault.kind == "drop-after":
            self.close_connection = True
            return  # stored, but the client never hears about it
        if fault and fault.kind == "slow":
            time.sleep(fault.seconds)
        answer = {"status": "success", "message": "feedback logged", "feedback_ids": ids}
        if state.omit_feedback_ids:
            del answer["feedback_ids"]
        self._send(200, answer)

    def _refused_before_body(self, method: str, base: str) -> bool:
        """Routing and the key check ahead of the body parser: a 404, 401, 403 or redirect is
        answered with the body left unread, and on the kept-alive connection the server then
        parses that body as the next request (BaseHTTPRequestHandler answers it 400 or 501)."""
        state = self.state
        wrong_path = not (
            (method == "POST" and self.path == base + "/feedback")
            or (method == "PUT" and self.path.startswith(base + "/feedback/"))
        )
        if state.redirect_to is not None:
            self._send(307, {}, {"Location": state.redirect_to})
        elif wrong_path:
            self._send(404, {"status": "failure", "message": "not found"})
        elif self.headers.get("x-portkey-api-key") != state.api_key:
            self._send(401, {"success": False, "data": {"message": "Invalid API Key"}})
        elif state.forbidden:
            self._send(403, {"success": False, "data": {"message": "missing scope"}})
        else:
            return False
        return True

    def _unknown_path(self) -> None:
        if self.state.unknown_path == "html-200":  # what a web app answers for any path
            page = b"<!doctype html><html><body><div id=app></div></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return None
        if self.state.unknown_path == "405":
            return self._send(405, {"detail": "Method Not Allowed"})
        return self._send(404, {"status": "failure", "message": "not found"})

    def _update(self, feedback_id: str, body: Any) -> None:
        with self.state.lock:
            known = any(fid == feedback_id for fid, _ in self.state.stored)
            if known:
                self.state.updates.append((feedback_id, body))
        if known and self.state.hook is not None:
            self.state.hook("stored", [body])
        if not known:
            return self._send(404, {"status": "failure", "message": "feedback not found"})
        self._send(200, {"status": "success", "message": "feedback updated"})

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        with self.state.lock:
            self.state.statuses[status] += 1
            if status == 429:
                self.state.throttled_at.append(time.monotonic() - self.state.started)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: StubState, base_path: str = "/v1") -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state
        self.base_path = base_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.base_path}"


def portkey_stub(**settings: Any) -> AbstractContextManager[StubServer]:
    return serving(StubServer(StubState(**settings)))


@contextmanager
def tls_portkey_stub(ca: trustme.CA) -> Iterator[StubServer]:
    """The stand-in behind TLS, with a certificate for 127.0.0.1 signed by CA."""
    server = StubServer(StubState())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server
