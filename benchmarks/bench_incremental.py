"""Incremental sync against a full one, on a large history.

    python benchmarks/bench_incremental.py [--records 100000] [--snapshot-kb 40] [--rounds 3]
                                           [--shapes large,small]

An Open WebUI stand-in in this process (loopback only) holds RECORDS ratings shaped like the real
0.12.4 records (a real record's snapshot padded to about SNAPSHOT_KB per record; the `small`
shape is that real record unpadded, ~6 KB), generated on the fly from a template: nothing of
that size is stored. It serves /feedbacks/all/ids (one-second updated_at, newest first),
/feedback/{id} (404 once deleted) and /feedbacks/all/export (streamed, the whole array), and
counts the bytes each route sends. The Portkey stand-in from tests/ runs in this process too;
`owui-replay sync` runs as its own process, as cron runs it.

Per shape: one first sync loads the history (sends every rating: reported, not compared).
Then, per round, 10 changes (3 created, 4 flipped, 3 deleted) before each of two timed runs,
in alternating order: an incremental `sync` and a `sync --full` (the whole export, although
Portkey already holds the rest). Reported: bytes read from Open WebUI and wall time of each,
min / median / max over the rounds, their ratios (goals: bytes < 1%, time < 5%), and the load
average before and after.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.figures import load, spread  # noqa: E402
from tests.helpers import REAL_EXPORT  # noqa: E402
from tests.openwebui_stub import ADMIN_TOKEN  # noqa: E402
from tests.portkey_stub import API_KEY, portkey_stub  # noqa: E402

IDS = "/api/v1/evaluations/feedbacks/all/ids"
RECORD = "/api/v1/evaluations/feedback/"
EXPORT = "/api/v1/evaluations/feedbacks/all/export"
USER = "60a532f8-7184-4447-8963-d47880fcc82c"  # a real-length user id: /ids is ~140 bytes a row


def template(snapshot_kb: float) -> bytes:
    """A real record with markers for what differs per rating, its snapshot padded."""
    record = next(r for r in json.loads(REAL_EXPORT.read_text()) if r.get("snapshot"))
    record = copy.deepcopy(record)
    record.update(id="@ID@", created_at="@C@", updated_at="@U@")
    record["data"]["rating"] = "@R@"
    record["meta"]["message_id"] = "@MSG@"
    body = json.dumps(record, ensure_ascii=False)
    pad = max(0, int(snapshot_kb * 1024) - len(body))
    messages = record["snapshot"]["chat"]["chat"]["history"]["messages"]
    first = next(iter(messages.values()))
    first["content"] = str(first.get("content", "")) + " lorem ipsum" * (pad // 12)
    text = json.dumps(record, ensure_ascii=False)
    for marker in ("@C@", "@U@", "@R@"):
        text = text.replace(f'"{marker}"', marker)
    return text.encode()


class History:
    """The ratings: per id its created_at, updated_at and rating; records built on demand."""

    def __init__(self, count: int, snapshot_kb: float) -> None:
        self.tpl = template(snapshot_kb)
        self.rng = random.Random(7)
        start = int(time.time()) - 10 * 86400
        self.rows: dict[str, list[int]] = {}
        for i in range(count):
            at = start + i * 5
            self.rows[str(uuid.UUID(int=self.rng.getrandbits(128)))] = [at, at, 1 if i % 3 else -1]
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()

    def record(self, fid: str) -> bytes | None:
        with self.lock:
            row = self.rows.get(fid)
            if row is None:
                return None
            created, updated, rating = row
        out = self.tpl.replace(b"@ID@", fid.encode()).replace(b"@MSG@", fid[::-1].encode())
        out = out.replace(b"@C@", str(created).encode()).replace(b"@U@", str(updated).encode())
        return out.replace(b"@R@", str(rating).encode())

    def ids(self) -> bytes:
        with self.lock:
            rows = [
                {"id": fid, "user_id": USER, "created_at": c, "updated_at": u}
                for fid, (c, u, _r) in self.rows.items()
            ]
        rows.sort(key=lambda r: -r["updated_at"])
        return json.dumps(rows).encode()

    def change(self, n_create: int, n_flip: int, n_delete: int) -> None:
        now = int(time.time()) - 5  # a finished second: the next read sees the final versions
        with self.lock:
            keys = self.rng.sample(list(self.rows), n_flip + n_delete)
            for fid in keys[:n_flip]:
                self.rows[fid][1] = now
                self.rows[fid][2] = -self.rows[fid][2]
            for fid in keys[n_flip:]:
                del self.rows[fid]
            for _ in range(n_create):
                self.rows[str(uuid.UUID(int=self.rng.getrandbits(128)))] = [now, now, 1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        history = self.server.history
        path = urlsplit(self.path).path
        if self.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
            return self._send(401, b'{"detail": "invalid"}', "other")
        if path == IDS:
            return self._send(200, history.ids(), "ids")
        if path.startswith(RECORD):
            body = history.record(path[len(RECORD) :])
            if body is None:
                return self._send(404, b'{"detail": "not found"}', "record")
            return self._send(200, body, "record")
        if path == EXPORT:
            return self._export()
        return self._send(404, b'{"detail": "Not Found"}', "other")

    def _send(self, status: int, body: bytes, route: str) -> None:
        """Gzipped whole for a client that accepts it, from 500 bytes (Open WebUI's middleware)."""
        gzipped = len(body) >= 500 and "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:
            body = gzip.compress(body, compresslevel=4)
        with self.server.history.lock:
            self.server.history.served[route] += len(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def _export(self) -> None:
        """The whole array, streamed as it is built, the connection closed at its end."""
        history = self.server.history
        with history.lock:
            keys = list(history.rows)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block: list[bytes] = [b"["]
        size, sent = 1, 0
        for fid in keys:
            body = history.record(fid)
            if body is None:
                continue
            block.append(body if len(block) == 1 and sent == 0 else b"," + body)
            size += len(block[-1])
            if size > 1 << 20:
                self.wfile.write(b"".join(block))
                sent, block, size = sent + size, [], 0
        block.append(b"]")
        self.wfile.write(b"".join(block))
        with history.lock:
            history.served["export"] += sent + size + 1


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, history: History) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.history = history

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def sync(work: Path, env: dict[str, str], *extra: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "owui_replay", "sync", "--workdir", str(work), "--json",
         "--keep", "1", "-q", *extra],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 10):
        raise SystemExit(f"sync failed ({done.returncode}): {done.stderr}")
    return seconds, json.loads(done.stdout)


def shape_rounds(
    name: str, records: int, snapshot_kb: float, rounds: int, root: Path
) -> dict[str, list[float]]:
    history = History(records, snapshot_kb)
    server = Server(history)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out: dict[str, list[float]] = {k: [] for k in ("inc_s", "full_s", "inc_b", "full_b")}
    try:
        with portkey_stub() as pk:
            env = {**os.environ, "OPENWEBUI_BASE_URL": server.url, "OPENWEBUI_TOKEN": ADMIN_TOKEN,
                   "PORTKEY_API_KEY": API_KEY, "PORTKEY_BASE_URL": pk.url}  # fmt: skip
            work = root / name
            seconds, doc = sync(work, env, "--batch-size", "100")
            print(
                f"{name}: first sync of {records} ratings ({doc['download']['bytes'] / 1e6:.0f} MB "
                f"export): {seconds:.1f} s, mode {doc['mode']}",
                flush=True,
            )
            for i in range(rounds):
                order = ("inc", "full") if i % 2 == 0 else ("full", "inc")
                for kind in order:
                    history.change(3, 4, 3)
                    history.served.clear()
                    seconds, doc = sync(work, env, *(["--full"] if kind == "full" else []))
                    read = sum(history.served.values())
                    assert doc["mode"] == ("full" if kind == "full" else "incremental"), doc
                    assert doc["openwebui"]["bytes_read"] == read, (doc["openwebui"], read)
                    out[f"{kind}_s"].append(seconds)
                    out[f"{kind}_b"].append(float(doc["openwebui"]["bytes_read"]))
                    print(
                        f"  round {i + 1} {kind:>4}: {seconds:6.2f} s, "
                        f"{doc['openwebui']['bytes_read'] / 1e6:9.3f} MB read, "
                        f"withdrawn {doc['withdrawals']['withdrawn']}",
                        flush=True,
                    )
    finally:
        server.shutdown()
        server.server_close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--snapshot-kb", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="large,small")
    args = parser.parse_args()
    sizes = {"large": args.snapshot_kb, "small": 0.0}  # small: the real record, unpadded (~6 KB)
    print(f"load before: {load()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    try:
        results = {
            shape: shape_rounds(shape, args.records, sizes[shape], args.rounds, root)
            for shape in args.shapes.split(",")
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load after: {load()}")
    for shape, r in results.items():
        ratio_b = [i / f for i, f in zip(r["inc_b"], r["full_b"], strict=True)]
        ratio_s = [i / f for i, f in zip(r["inc_s"], r["full_s"], strict=True)]
        inc_mb = spread([b / 1e6 for b in r["inc_b"]], "{:.2f}")
        full_mb = spread([b / 1e6 for b in r["full_b"]], "{:.0f}")
        print(
            f"{shape} ({args.records} ratings, ~{r['full_b'][0] / args.records / 1024:.1f} KB "
            "a record): "
            f"incremental {spread(r['inc_s'], '{:.2f}')} s, {inc_mb} MB; "
            f"full {spread(r['full_s'], '{:.1f}')} s, {full_mb} MB; "
            f"bytes {spread([100 * x for x in ratio_b], '{:.3f}')} % (goal < 1 %), "
            f"time {spread([100 * x for x in ratio_s], '{:.2f}')} % (goal < 5 %)"
        )


if __name__ == "__main__":
    main()
