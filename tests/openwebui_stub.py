"""An Open WebUI-compatible stand-in on 127.0.0.1 serving the real 0.12.4 shapes.

GET /api/v1/evaluations/feedbacks/all/export (admins only; non-admins get 401 as on real
servers) streams an export file; GET /api/v1/evaluations/feedbacks/user?page=N returns the
caller's ratings as {"items": [...], "total": N}, 30 a page (or, in legacy mode, a plain
list). Tokens are accepted as `Authorization: Bearer` and as `Cookie: token=`.

As a real 0.12.4 server does: every refusal is a 401 whose `detail` tells a bad token from a
missing permission; GET /api/v1/auths/ answers a session's role (403 for an sk- key); any
unknown path answers the web app's HTML with 200; with `Accept-Encoding: gzip` the whole
export is compressed before the first byte is sent; and a rating can be updated while the
pages are read (`on_page`), moving it to page 1 (newest updated_at first).
"""

from __future__ import annotations

import gzip
import json
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.serving import serving

ADMIN_TOKEN = "owui-admin-c2VjcmV0LWFkbWluLXRva2Vu"
ADMIN_API_KEY = "sk-0123456789abcdef0123456789abcdef"
USER_TOKEN = "owui-user-c2VjcmV0LXVzZXItdG9rZW4"
PENDING_TOKEN = "owui-pending-c2VjcmV0LXBlbmRpbmc"
USER_API_KEY = "sk-fedcba9876543210fedcba9876543210"
USER_ID = "60a532f8-7184-4447-8963-d47880fcc82c"
INVALID = "Your session has expired or the token is invalid. Please sign in again."
NO_PERMISSION = (
    "You do not have permission to access this resource. Please contact your administrator "
    "for assistance."
)
WEB_PAGE = b"<!doctype html><html><head><title>Open WebUI</title></head><body></body></html>"


@dataclass
class OwuiState:
    export_file: Path | None = None
    export_chunks: Any = None  # a callable returning an iterator of bytes (large exports)
    export_body: Any = None  # a callable building the whole body per request, as 0.12.4 does
    user_items: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 30
    legacy_user_list: bool = False
    bearer_enabled: bool = True  # False: a proxy strips Authorization, only the cookie works
    truncate_to: int | None = None  # promise the full length, send only this many bytes
    html_instead: bool = False  # a login page where JSON was expected
    on_page: Any = None  # called with (state, page) after a user page is served
    encodings: list[str] = field(default_factory=list)  # Accept-Encoding of each request
    log: list[tuple[str, str]] = field(default_factory=list)  # (path with query, auth kind)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _caller(self) -> tuple[str | None, str]:
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        if state.bearer_enabled and auth.startswith("Bearer "):
            return auth[7:], "bearer"
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "token":
                return value, "cookie"
        return None, "none"

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        token, kind = self._caller()
        with state.lock:
            state.log.append((self.path, kind))
            state.encodings.append(self.headers.get("Accept-Encoding", ""))
        if state.html_instead:
            return self._send(200, b"<html>Sign in</html>", "text/html")
        admin = token in (ADMIN_TOKEN, ADMIN_API_KEY)
        known = admin or token in (USER_TOKEN, USER_API_KEY, PENDING_TOKEN)
        user = USER_ID if token in (USER_TOKEN, USER_API_KEY) or admin else None
        api = url.path.startswith("/api/v1/")
        if api and not known:
            return self._json(401, {"detail": INVALID})
        if url.path == "/api/v1/auths/":
            if token in (ADMIN_API_KEY, USER_API_KEY):
                return self._json(403, {"detail": "A human session is required."})
            role = "admin" if admin else "user" if token == USER_TOKEN else "pending"
            return self._json(200, {"id": USER_ID, "role": role, "name": "someone"})
        if url.path == "/api/v1/evaluations/feedbacks/all/export":
            if not admin:
                return self._json(401, {"detail": NO_PERMISSION})
            return self._export()
        if url.path == "/api/v1/evaluations/feedbacks/user":
            if user is None:
                return self._json(401, {"detail": NO_PERMISSION})
            with state.lock:
                mine = [i for i in state.user_items if i.get("user_id") == user]
            if state.legacy_user_list:
                return self._json(200, mine)
            page = int(parse_qs(url.query).get("page", ["1"])[0])
            start = (page - 1) * state.page_size
            body = {"items": mine[start : start + state.page_size], "total": len(mine)}
            self._json(200, body)
            if state.on_page is not None:
                state.on_page(state, page)
            return None
        if api:
            return self._json(404, {"detail": "Not Found"})
        self._send(200, WEB_PAGE, "text/html; charset=utf-8")  # the web app, for any path

    def _export(self) -> None:
        state = self.server.state
        if state.export_chunks is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in state.export_chunks():
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = state.export_body() if state.export_body else state.export_file.read_bytes()
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:  # the whole response is built and compressed before the first byte
            body = gzip.compress(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.truncate_to is not None:
            self.wfile.write(body[: state.truncate_to])
            self.close_connection = True
            return
        self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OwuiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: OwuiState) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def openwebui_stub(**settings: Any) -> AbstractContextManager[OwuiServer]:
    return serving(OwuiServer(OwuiState(**settings)))
