"""The listener's HTTP side: Open WebUI's event webhook in, /healthz out. Nothing else.

The standard library's ThreadingHTTPServer, on purpose: the load is a few small POSTs a second
(an event is ~600 bytes), each handled by one SQLite commit, so a thread per connection costs
nothing that matters, and a production server (waitress, uvicorn) would be a new runtime
dependency without a gain in speed or correctness. What it lacks is added here: TCP_NODELAY
(headers and body leave in two writes; with Nagle and a delayed ACK each answer would wait
~40 ms), a socket timeout so an idle or slow client cannot hold a thread, a body limit read
from Content-Length before any byte of the body, and exact routing (any other path: 404, any
other method: 405, nothing fetched). Run it behind a reverse proxy for TLS.
"""

from __future__ import annotations

import hmac
import json
import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from owui_replay.openwebui_live import FEEDBACK_ID

MAX_BODY = 64 * 1024  # a real event is under 1 kB; the actor block is the largest part
EVENTS = frozenset(
    {"feedback.created", "feedback.updated", "feedback.deleted", "feedback.deleted_all"}
)


def parse_event(body: bytes) -> tuple[str, str] | None:
    """(subject id, event type) of a feedback event; None if it is not one. Everything else
    in the body (the actor's name and email above all) is dropped here, unread."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return None
    subject = event.get("subject")
    subject_id = subject.get("id") if isinstance(subject, dict) else None
    if not isinstance(subject_id, str):
        return None
    kind = event["event"]
    if kind == "feedback.deleted_all":
        return ("all", kind) if subject_id == "all" else None
    return (subject_id, kind) if FEEDBACK_ID.fullmatch(subject_id) else None


class Receiver:
    """What the server calls: accept a hint (durably), or describe health."""

    def __init__(
        self,
        accept: Callable[[str, str], None],
        health: Callable[[], tuple[int, dict[str, Any]]],
        secret: str,
        prefix: str,
    ) -> None:
        self.accept = accept
        self.health = health
        self.secret = secret
        self.prefix = prefix.rstrip("/")

    def route(self, path: str) -> str | None:
        """'events', 'healthz' or None for a request path."""
        path = urlsplit(path).path
        for base in {self.prefix, ""}:
            if path == f"{base}/healthz":
                return "healthz"
            if path.startswith(f"{base}/events/") and hmac.compare_digest(
                path[len(base) + 8 :].encode(), self.secret.encode()
            ):
                return "events"
        return None


class Handler(BaseHTTPRequestHandler):
    """One HTTP request to the listener: an event, /healthz, or anything else (refused)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 10  # seconds a client may idle mid-request
    server_version = "owui-replay"
    sys_version = ""
    server: ListenServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line holds the secret; the listener logs actions, not requests

    def do_POST(self) -> None:
        where = self.server.receiver.route(self.path)
        if where is None:
            return self._json(404, {"detail": "not found"}, close=True)
        if where != "events":
            return self._json(405, {"detail": "method not allowed"}, close=True)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._json(411, {"detail": "Content-Length required"}, close=True)
        if int(length) > MAX_BODY:
            return self._json(413, {"detail": f"body over {MAX_BODY} bytes"}, close=True)
        body = self.rfile.read(int(length))
        parsed = parse_event(body)
        if parsed is None:
            return self._json(400, {"detail": "not an Open WebUI feedback event"})
        try:
            self.server.receiver.accept(*parsed)
        except Exception:  # the disk refused: say so, keep serving
            return self._json(503, {"detail": "could not record the event"})
        self._json(200, {"status": "recorded"})

    def do_GET(self) -> None:
        where = self.server.receiver.route(self.path)
        if where is None:
            return self._json(404, {"detail": "not found"}, close=True)
        if where != "healthz":
            return self._json(405, {"detail": "method not allowed"}, close=True)
        status, doc = self.server.receiver.health()
        self._json(status, doc)

    def _other(self) -> None:
        known = self.server.receiver.route(self.path) is not None
        self._json(405 if known else 404, {"detail": "not allowed"}, close=True)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def _json(self, status: int, body: Any, *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:  # an unread body must not be taken for the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class ListenServer(ThreadingHTTPServer):
    """The listener's HTTP server: threads per request, Nagle off, no tracebacks."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, receiver: Receiver) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host.strip("[]"), port), Handler)
        self.receiver = receiver

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or broke off mid-request: nothing was recorded for it, and
        it is not worth a traceback on the service's stderr."""
