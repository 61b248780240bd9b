"""A logging HTTP proxy on 127.0.0.1 for tests: forwards CONNECT tunnels and absolute-form
requests, as a corporate proxy does, and records every byte a client sent it.

It forwards only to 127.0.0.1 (anything else gets 502), so no test reaches the network even
when the code under test sends a request it should not.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from tests.serving import serving


class ProxyLog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen = bytearray()  # every byte clients sent to the proxy, in arrival order
        self.requests: list[str] = []  # request lines: "CONNECT h:p HTTP/1.1", "POST http://..."

    def add(self, data: bytes) -> None:
        with self.lock:
            self.seen += data


class ProxyHandler(socketserver.BaseRequestHandler):
    server: ProxyServer

    def handle(self) -> None:
        client = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            self.server.log.add(chunk)
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        with self.server.log.lock:
            self.server.log.requests.append(request_line)
        method, target, _version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = self._upstream(host, int(port))
            if upstream is None:
                return
            with upstream:  # closed however the tunnel ends, even if a send fails
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = head.split(b"\r\n\r\n", 1)[1]
                if rest:
                    upstream.sendall(rest)
                self._pipe(client, upstream)
        else:  # absolute form: rewrite to origin form, one request per connection
            parts = urlsplit(target)
            upstream = self._upstream(parts.hostname or "", parts.port or 80)
            if upstream is None:
                return
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            lines = head.split(b"\r\n")
            lines[0] = f"{method} {path} HTTP/1.1".encode()
            lines = [x for x in lines if not x.lower().startswith(b"proxy-connection:")]
            with upstream:
                upstream.sendall(b"\r\n".join(lines))
                self._pipe(client, upstream)

    def _upstream(self, host: str, port: int) -> socket.socket | None:
        if host not in ("127.0.0.1", "localhost"):
            self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return None
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return None

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        while True:
            readable, _, _ = select.select([client, upstream], [], [], 10)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is client:
                    self.server.log.add(data)
                    upstream.sendall(data)
                else:
                    client.sendall(data)


class ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.log = ProxyLog()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def logging_proxy() -> Iterator[ProxyServer]:
    with serving(ProxyServer()) as server:
        yield server


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
