"""An Open WebUI-compatible stand-in on 127.0.0.1 serving the real 0.12.4 shapes.

GET /api/v1/evaluations/feedbacks/all/export (admins only; non-admins get 401 as on real
servers) streams an export file; GET /api/v1/evaluations/feedbacks/user?page=N returns the
caller's ratings as {"items": [...], "total": N}, 30 a page (or, in legacy mode, a plain
list). Tokens are accepted as `Authorization: Bearer` and as `Cookie: token=`.
"""

from __future__ import annotations

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
USER_ID = "60a532f8-7184-4447-8963-d47880fcc82c"


@dataclass
class OwuiState:
    export_file: Path | None = None
    export_chunks: Any = None  # a callable returning an iterator of bytes (large exports)
    user_items: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 30
    legacy_user_list: bool = False
    bearer_enabled: bool = True  # False: a proxy strips Authorization, only the cookie works
    truncate_to: int | None = None  # promise the full length, send only this many bytes
    html_instead: bool = False  # a login page where JSON was expected
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
        if state.html_instead:
            return self._send(200, b"<html>Sign in</html>", "text/html")
        admin = token in (ADMIN_TOKEN, ADMIN_API_KEY)
        user = USER_ID if token == USER_TOKEN else (USER_ID if admin else None)
        if url.path == "/api/v1/evaluations/feedbacks/all/export":
            if not admin:
                return self._json(401, {"detail": "401 Unauthorized"})
            return self._export()
        if url.path == "/api/v1/evaluations/feedbacks/user":
            if user is None:
                return self._json(401, {"detail": "Not authenticated"})
            mine = [i for i in state.user_items if i.get("user_id") == user]
            if state.legacy_user_list:
                return self._json(200, mine)
            page = int(parse_qs(url.query).get("page", ["1"])[0])
            start = (page - 1) * state.page_size
            return self._json(
                200, {"items": mine[start : start + state.page_size], "total": len(mine)}
            )
        self._json(404, {"detail": "Not Found"})

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
        body = state.export_file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
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
