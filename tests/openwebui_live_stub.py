"""An Open WebUI 0.12.4 stand-in for the live side: feedback that changes, event webhooks, /ids.

Behaves as a real 0.12.4 server was seen to (OPENWEBUI-FACTS, "Live events and incremental
fetch"), not as the listener would like:
- a change (create, update, delete, delete-all) is applied at once; its event is POSTed to
  every enabled webhook whose pattern matches, 20-60 ms later, from its own thread, in the
  shape of samples/openwebui-events/ (with the rater's name and email in `actor`), with no
  signature and no retry: a receiver that is down or answers an error loses it;
- `updated_at` is in whole seconds, so two changes within one second look alike in /ids;
- GET /api/v1/evaluations/feedbacks/all/ids lists {id, user_id, created_at, updated_at},
  newest updated_at first; GET /api/v1/evaluations/feedback/{id} answers the record as in the
  export, 404 {"detail": ...} once deleted; the export endpoint answers the whole array;
- GET/POST /api/events/webhooks and PUT/DELETE /api/events/webhooks/{id} (admins);
- tokens as tests/openwebui_stub.py: 401 with the real `detail` texts, HTML 200 for any path
  that is no route.
"""

from __future__ import annotations

import copy
import fnmatch
import gzip
import json
import random
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.openwebui_stub import ADMIN_TOKEN, INVALID, NO_PERMISSION, USER_TOKEN, WEB_PAGE
from tests.serving import serving

IDS = "/api/v1/evaluations/feedbacks/all/ids"
RECORD = "/api/v1/evaluations/feedback/"
EXPORT = "/api/v1/evaluations/feedbacks/all/export"
WEBHOOKS = "/api/events/webhooks"
MIN_COMPRESSED = 500  # starlette-compress's minimum_size, which Open WebUI keeps
NOT_FOUND = "We could not find what you're looking for :/"
INSTANCE_ID = "c30a7d01-564e-4bfe-a245-23fc3c018a6c"
ACTOR = {
    "id": "ad7f6850-368a-4821-a29a-9334da04795f",
    "name": "Ada Actor-only-in-events",
    "email": "ada.actor-only-in-events@example.com",
    "role": "admin",
    "created_at": 1796168484,
    "updated_at": 1796168484,
    "type": "user",
}


def event_body(name: str, subject: str, data: Any, at: int | None = None) -> dict[str, Any]:
    """An event as Open WebUI 0.12.4 posts it (samples/openwebui-events/)."""
    resource, _, operation = name.partition(".")
    return {
        "schema": "0.12.4", "id": str(uuid.uuid4()), "event": name, "resource": resource,
        "operation": operation, "created_at": at or int(time.time()),
        "instance_id": INSTANCE_ID, "version": "0.12.4", "source": "api", "actor": ACTOR,
        "subject": {"type": resource, "id": subject}, "data": data, "message": None,
    }  # fmt: skip


@dataclass
class LiveOwui:
    """The server's data and its event publisher; tests change ratings through its methods,
    as a person clicking in the web app would."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    delay: tuple[float, float] = (0.02, 0.06)  # seconds from a change to its event's POST
    clock: Callable[[], float] = time.time
    api_error: int | None = None  # answer every API request with this status (an outage)
    posted: Counter[str] = field(default_factory=Counter)  # event deliveries: ok / dropped
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    bytes_served: Counter[str] = field(default_factory=Counter)  # per route
    rng: random.Random = field(default_factory=lambda: random.Random(4))
    lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: list[threading.Timer] = field(default_factory=list)

    # -- changes, as the web app makes them ------------------------------------------------

    def create(self, record: dict[str, Any]) -> str:
        now = int(self.clock())
        record = copy.deepcopy(record)
        record["created_at"] = record["updated_at"] = now
        with self.lock:
            self.records[record["id"]] = record
        rating = (record.get("data") or {}).get("rating")
        self._publish("created", record["id"], {"rating": rating})
        return str(record["id"])

    def update(self, feedback_id: str, rating: Any) -> None:
        with self.lock:
            record = self.records[feedback_id]
            record["data"]["rating"] = rating
            record["updated_at"] = int(self.clock())
        self._publish("updated", feedback_id, {"rating": rating})

    def delete(self, feedback_id: str) -> None:
        with self.lock:
            del self.records[feedback_id]
        self._publish("deleted", feedback_id, {})

    def delete_all(self) -> None:
        with self.lock:
            self.records.clear()
        self._publish("deleted_all", "all", {})

    def current(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.records)

    def settle(self, timeout: float = 2.0) -> None:
        """Wait until every event already published has been posted (or dropped)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if all(not t.is_alive() for t in self._pending):
                    self._pending.clear()
                    return
            time.sleep(0.01)

    # -- events ---------------------------------------------------------------------------

    def _publish(self, operation: str, subject: str, data: dict[str, Any]) -> None:
        name = f"feedback.{operation}"
        body = json.dumps(event_body(name, subject, data, int(self.clock()))).encode()
        with self.lock:
            targets = [
                hook["url"]
                for hook in self.webhooks.values()
                if hook.get("enabled") and any(fnmatch.fnmatchcase(name, p) for p in hook["events"])
            ]
            for url in targets:
                timer = threading.Timer(self.rng.uniform(*self.delay), self._post, (url, body))
                timer.daemon = True
                self._pending.append(timer)
                timer.start()

    def _post(self, url: str, body: bytes) -> None:
        """One attempt, as Open WebUI's aiohttp post: a failure is logged there and dropped."""
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "*/*",
                     "User-Agent": "Python/3.11 aiohttp/3.14.5"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
            outcome = "ok"
        except Exception:
            outcome = "dropped"
        with self.lock:
            self.posted[outcome] += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LiveServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owui(self) -> LiveOwui:
        return self.server.owui

    def _admin(self) -> bool:
        """True for an admin; otherwise the 401 has been answered."""
        token = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:]
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "token" and token is None:
                token = value
        if token == ADMIN_TOKEN:
            return True
        self._json(401, {"detail": NO_PERMISSION if token == USER_TOKEN else INVALID})
        return False

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        with self.owui.lock:
            self.owui.requests.append((method, path))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        routes = {IDS: ("GET",), EXPORT: ("GET",), WEBHOOKS: ("GET", "POST")}
        if path in routes or path.startswith((RECORD, WEBHOOKS + "/")):
            allowed = routes.get(path, ("GET",) if path.startswith(RECORD) else ("PUT", "DELETE"))
            if method not in allowed:
                return self._json(405, {"detail": "Method Not Allowed"})
            if not self._admin():
                return None
            if self.owui.api_error is not None:
                return self._json(self.owui.api_error, {"detail": "Internal Server Error"})
            return self._api(method, path, body)
        self._send(200, WEB_PAGE, "text/html; charset=utf-8", "page")

    def _api(self, method: str, path: str, body: Any) -> None:
        owui = self.owui
        if path == IDS:
            with owui.lock:
                rows = [
                    {key: r[key] for key in ("id", "user_id", "created_at", "updated_at")}
                    for r in owui.records.values()
                ]
            rows.sort(key=lambda r: -r["updated_at"])
            return self._json(200, rows, "ids")
        if path == EXPORT:
            with owui.lock:
                data = json.dumps(list(owui.records.values())).encode()
            return self._send(200, data, "application/json", "export")
        if path.startswith(RECORD):
            with owui.lock:
                record = owui.records.get(path[len(RECORD) :])
                data = json.dumps(record).encode() if record else None
            if data is None:
                return self._json(404, {"detail": NOT_FOUND})
            return self._send(200, data, "application/json", "record")
        return self._webhooks(method, path, body)

    def _webhooks(self, method: str, path: str, body: Any) -> None:
        with self.owui.lock:
            status, answer = self._change_webhooks(method, path, body)
        self._json(status, answer)

    def _change_webhooks(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        owui = self.owui
        if path == WEBHOOKS and method == "GET":
            return 200, copy.deepcopy(list(owui.webhooks.values()))
        now = int(owui.clock())
        if path == WEBHOOKS:
            hook = {"id": str(uuid.uuid4()), "name": body["name"], "url": body["url"],
                    "enabled": body.get("enabled", True), "events": body["events"],
                    "targets": None, "created_at": now, "updated_at": now}  # fmt: skip
            owui.webhooks[hook["id"]] = hook
            return 200, dict(hook)
        hook_id = path.rsplit("/", 1)[1]
        if hook_id not in owui.webhooks:
            return 404, {"detail": NOT_FOUND}
        if method == "DELETE":
            del owui.webhooks[hook_id]
            return 200, True
        owui.webhooks[hook_id].update(body, updated_at=now)  # a partial update
        return 200, dict(owui.webhooks[hook_id])

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _json(self, status: int, body: Any, route: str = "other") -> None:
        self._send(status, json.dumps(body).encode(), "application/json", route)

    def _send(self, status: int, data: bytes, content_type: str, route: str) -> None:
        """As Open WebUI's compression middleware does: a body of 500 bytes or more is gzipped
        whole for a client that accepts gzip (the bytes counted are those sent)."""
        gzipped = len(data) >= MIN_COMPRESSED and "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:
            data = gzip.compress(data, compresslevel=4)
        with self.owui.lock:
            self.owui.bytes_served[route] += len(data)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Vary", "Accept-Encoding")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(data)


class LiveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owui: LiveOwui) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.owui = owui

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request (the kill test) is not the server's error

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def live_openwebui(**settings: Any) -> AbstractContextManager[LiveServer]:
    return serving(LiveServer(LiveOwui(**settings)))


def new_rating(template: dict[str, Any], rating: int) -> dict[str, Any]:
    """Another rating shaped like TEMPLATE (a real record): a new id, its own rated message."""
    record = copy.deepcopy(template)
    record["id"] = str(uuid.uuid4())
    record["meta"]["message_id"] = str(uuid.uuid4())
    record["data"]["rating"] = rating
    return record
