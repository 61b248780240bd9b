"""The delivery ledger: which Open WebUI ratings Portkey already has, across runs and exports.

An SQLite file (default $XDG_STATE_HOME/owui-replay/ledger.sqlite3, else
~/.local/state/owui-replay/ledger.sqlite3; --ledger PATH to choose). One row per Portkey
endpoint and Open WebUI feedback id:

    delivered(endpoint, feedback_id, portkey_id, updated_at, value, trace_id, recorded_at)

Replay consults it before sending: a rating never sent is POSTed; one sent with an older
updated_at (the user flipped or edited it) is updated with PUT /feedback/{portkey_id};
one sent with the same updated_at is skipped as unchanged; an older version than the one
sent is skipped as stale. The per-file journal stays the source of truth for a run: rows are
written after Portkey acknowledged, committed in groups, and rebuilt from the journal's acks
at the start of the next run, so a crash between the two loses nothing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    endpoint    TEXT NOT NULL,
    feedback_id TEXT NOT NULL,
    portkey_id  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    value       INTEGER NOT NULL,
    trace_id    TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (endpoint, feedback_id)
)
"""


def default_ledger_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "owui-replay" / "ledger.sqlite3"


@dataclass(frozen=True)
class Delivered:
    portkey_id: str
    updated_at: int
    value: int


class Ledger:
    def __init__(self, path: Path, endpoint: str, *, commit_seconds: float = 0.5) -> None:
        self.path = path
        self.endpoint = endpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()
        self._commit_seconds = commit_seconds
        self._pending = 0
        self._last_commit = time.monotonic()
        self._db.execute("BEGIN")

    def lookup(self, feedback_id: str) -> Delivered | None:
        with self._lock:
            row = self._db.execute(
                "SELECT portkey_id, updated_at, value FROM delivered "
                "WHERE endpoint = ? AND feedback_id = ?",
                (self.endpoint, feedback_id),
            ).fetchone()
        return Delivered(*row) if row else None

    def record(
        self, feedback_id: str, portkey_id: str, updated_at: int, value: int, trace_id: str
    ) -> None:
        """Remember what Portkey now holds for this rating (newest updated_at wins).

        portkey_id is "" when Portkey acknowledged without returning an id: the rating is
        still never posted again, but a later change cannot be sent as an update.
        """
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            self._db.execute(
                "INSERT INTO delivered VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (endpoint, feedback_id) DO UPDATE SET "
                "portkey_id = CASE WHEN excluded.portkey_id = '' THEN delivered.portkey_id "
                "ELSE excluded.portkey_id END, updated_at = excluded.updated_at, "
                "value = excluded.value, trace_id = excluded.trace_id, "
                "recorded_at = excluded.recorded_at "
                "WHERE excluded.updated_at >= delivered.updated_at",
                (self.endpoint, feedback_id, portkey_id, updated_at, value, trace_id, now),
            )
            self._pending += 1
            if time.monotonic() - self._last_commit >= self._commit_seconds:
                self._commit()

    def _commit(self) -> None:
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._db.execute("COMMIT")
            self._db.close()

    def count(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM delivered WHERE endpoint = ?", (self.endpoint,)
            ).fetchone()[0]
