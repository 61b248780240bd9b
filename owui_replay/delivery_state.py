"""The delivery state: what each Portkey endpoint holds of each rating. The one source of truth.

One SQLite file in WAL mode (default $XDG_STATE_HOME/owui-replay/ledger.sqlite3), shared by
every run of every file. A row per (endpoint, rating key):

- the delivered version: Portkey's feedback id, the `updated_at` and the content hash of the
  payload Portkey acknowledged;
- `unknown`: POST attempts whose outcome is not known. It goes up by one in the transaction
  committed *before* a POST leaves and down by one when the server answers (any status), so
  after a kill at any point a rating with `unknown > 0` may be stored at Portkey: uncertain.
- what Portkey refused (content hash, status, message), per endpoint.

Every intent and every outcome is its own committed transaction, so there is no lag window
between a request and the record of it. With `synchronous=NORMAL` a commit is a write(2) to
the WAL: it survives the process being killed; only a power loss or kernel crash can drop the
last commits (`durable=True` fsyncs every commit to close that too).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from owui_replay.errors import ExitCode, InputError, ReplayError

STATE_FORMAT = 2  # 1: the 0.1.0 ledger (table `delivered` only), upgraded in place on open

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    endpoint        TEXT NOT NULL,
    rating_key      TEXT NOT NULL,     -- Open WebUI feedback id, or sha256:<line> without one
    portkey_id      TEXT,              -- NULL: never acknowledged, '': acknowledged without id
    updated_at      INTEGER,           -- of the delivered version
    content         TEXT,              -- sha256 of the delivered {value, weight, metadata}
    trace_id        TEXT,
    delivered_at    TEXT,
    unknown         INTEGER NOT NULL DEFAULT 0,  -- POST attempts with no known outcome
    extra_copies    INTEGER NOT NULL DEFAULT 0,  -- unanswered POSTs later resent (audit)
    refused_content TEXT,
    refused_status  INTEGER,
    refused_detail  TEXT,
    last_attempt    TEXT,              -- method and time of the last request (audit)
    approved_by     TEXT,              -- principals who approved the handoff it came from
    PRIMARY KEY (endpoint, rating_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint   TEXT PRIMARY KEY,
    first_seen TEXT NOT NULL
);
"""


class LineState(Enum):
    """What a line is, measured against what its endpoint holds; decides what replay does."""

    NEW = "new"  # never sent to this endpoint: POST
    UNCERTAIN = "uncertain"  # a POST got no answer, may be stored: resend (announced) or skip
    CHANGED = "changed"  # delivered, but the payload differs: PUT to its Portkey id
    DELIVERED = "delivered"  # Portkey holds exactly this: skip
    STALE = "stale"  # Portkey holds a newer version: skip
    REFUSED = "refused"  # Portkey refused this exact payload: skip unless --retry-refused
    NOT_UPDATABLE = "not-updatable"  # changed, but Portkey never said which feedback holds it


@dataclass(frozen=True)
class Rating:
    """A line's identity: whose rating, which version, what content."""

    key: str
    updated_at: int
    content: str
    trace_id: str


@dataclass(frozen=True)
class Known:
    """What the state holds for one rating at one endpoint."""

    portkey_id: str | None
    updated_at: int | None
    content: str | None
    unknown: int
    refused_content: str | None

    @property
    def delivered(self) -> bool:
        return self.portkey_id is not None


def judge(rating: Rating, known: Known | None, *, retry_refused: bool = False) -> LineState:
    if known is None:
        return LineState.NEW
    if known.delivered:
        if known.content is not None and known.content == rating.content:
            return LineState.DELIVERED
        if known.updated_at is not None and rating.updated_at < known.updated_at:
            return LineState.STALE
        if known.content is None and rating.updated_at == known.updated_at:
            return LineState.DELIVERED  # a 0.1.0 row: no content hash, same version
        return LineState.CHANGED if known.portkey_id else LineState.NOT_UPDATABLE
    if known.refused_content == rating.content and not retry_refused:
        return LineState.REFUSED
    return LineState.UNCERTAIN if known.unknown > 0 else LineState.NEW


def default_state_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "owui-replay" / "ledger.sqlite3"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StateBusy(ReplayError):
    code = ExitCode.BUSY


class DeliveryState:
    """The store for one endpoint. Thread-safe: workers share one connection under a lock."""

    def __init__(
        self, path: Path, endpoint: str, *, durable: bool = False, create: bool = True
    ) -> None:
        self.path = path
        self.endpoint = endpoint
        if not create and not path.exists():
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(path)
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        _migrate(self._db, path)

    # -- exclusion ------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold this endpoint for the run: a second replay to it refuses instead of racing."""
        lock_path = Path(str(self.path) + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        offset = int.from_bytes(hashlib.sha256(self.endpoint.encode()).digest()[:4], "big") >> 1
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            os.close(fd)
            raise StateBusy(
                f"another owui-replay run is sending to {self.endpoint} (state {self.path}); "
                "it holds the endpoint until it ends"
            ) from None
        self._lock_fd = fd

    # -- reading --------------------------------------------------------------------------

    def lookup(self, key: str) -> Known | None:
        with self._lock:
            row = self._db.execute(
                "SELECT portkey_id, updated_at, content, unknown, refused_content FROM ratings "
                "WHERE endpoint = ? AND rating_key = ?",
                (self.endpoint, key),
            ).fetchone()
        return Known(*row) if row else None

    def counts(self) -> dict[str, int]:
        """Ratings at this endpoint by what is known of them."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), "
                "SUM(portkey_id IS NOT NULL), "
                "SUM(portkey_id IS NULL AND unknown > 0), "
                "SUM(portkey_id IS NULL AND refused_content IS NOT NULL AND unknown = 0), "
                "COALESCE(SUM(extra_copies), 0) FROM ratings WHERE endpoint = ?",
                (self.endpoint,),
            ).fetchone()
        names = ("ratings", "delivered", "uncertain", "refused", "extra_copies")
        return {name: int(value or 0) for name, value in zip(names, row, strict=True)}

    # -- the two records around every request ---------------------------------------------

    def intend(self, ratings: Sequence[Rating], method: str, approved_by: str = "") -> None:
        """Committed before the request leaves: a POST counts as maybe-stored until answered."""
        bump = 1 if method == "POST" else 0
        attempt = f"{method} {_now()}"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO ratings (endpoint, rating_key, unknown, last_attempt, approved_by) "
                "VALUES (?, ?, ?, ?, NULLIF(?, '')) ON CONFLICT (endpoint, rating_key) DO UPDATE "
                "SET unknown = unknown + excluded.unknown, last_attempt = excluded.last_attempt, "
                "approved_by = COALESCE(excluded.approved_by, approved_by)",
                [(self.endpoint, r.key, bump, attempt, approved_by) for r in ratings],
            )
            self._db.execute("COMMIT")

    def acknowledged(
        self, ratings: Sequence[Rating], ids: Sequence[str | None], method: str
    ) -> int:
        """Portkey holds these now. Returns the extra copies it may hold of them: POSTs that
        got no answer and were then sent again."""
        answered = 1 if method == "POST" else 0
        now = _now()
        rows = [
            (ids[i] or "", r.updated_at, r.content, r.trace_id, now, answered, self.endpoint, r.key)
            for i, r in enumerate(ratings)
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            extra = 0
            for row in rows:
                (before,) = self._db.execute(
                    "SELECT MAX(unknown - ?, 0) FROM ratings WHERE endpoint = ? AND rating_key = ?",
                    (answered, row[-2], row[-1]),
                ).fetchone()
                extra += before
                # a newer delivered version is never overwritten by an older one
                self._db.execute(
                    "UPDATE ratings SET "
                    "portkey_id = CASE WHEN ?1 = '' THEN COALESCE(portkey_id, '') ELSE ?1 END, "
                    "updated_at = CASE WHEN updated_at IS NULL OR ?2 >= updated_at THEN ?2 "
                    "ELSE updated_at END, "
                    "content = CASE WHEN updated_at IS NULL OR ?2 >= updated_at THEN ?3 "
                    "ELSE content END, "
                    "trace_id = ?4, delivered_at = ?5, "
                    "extra_copies = extra_copies + MAX(unknown - ?6, 0), unknown = 0, "
                    "refused_content = NULL, refused_status = NULL, refused_detail = NULL "
                    "WHERE endpoint = ?7 AND rating_key = ?8",
                    row,
                )
            self._db.execute("COMMIT")
        return extra

    def answered(self, ratings: Sequence[Rating], method: str) -> None:
        """The server answered without storing (429, 5xx, a stop): this attempt is known."""
        if method != "POST":
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE ratings SET unknown = MAX(unknown - 1, 0) "
                "WHERE endpoint = ? AND rating_key = ?",
                [(self.endpoint, r.key) for r in ratings],
            )
            self._db.execute("COMMIT")

    def refused(self, rating: Rating, method: str, status: int | None, detail: str) -> None:
        """Portkey refused this payload (a 4xx about the payload, not the configuration)."""
        answered = 1 if method == "POST" else 0
        with self._lock:
            self._db.execute(
                "UPDATE ratings SET unknown = MAX(unknown - ?, 0), refused_content = ?, "
                "refused_status = ?, refused_detail = ? WHERE endpoint = ? AND rating_key = ?",
                (answered, rating.content, status, detail[:500], self.endpoint, rating.key),
            )

    # -- housekeeping ---------------------------------------------------------------------

    def touch_endpoint(self) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO endpoints VALUES (?, ?)", (self.endpoint, _now())
            )

    def forget(self) -> int:
        """Drop everything known about this endpoint (start over); returns the rows removed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            removed = self._db.execute(
                "DELETE FROM ratings WHERE endpoint = ?", (self.endpoint,)
            ).rowcount
            self._db.execute("DELETE FROM endpoints WHERE endpoint = ?", (self.endpoint,))
            self._db.execute("COMMIT")
        return int(removed)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the endpoint lock
            self._lock_fd = None

    def __enter__(self) -> DeliveryState:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def list_endpoints(path: Path) -> list[tuple[str, dict[str, int]]]:
    """Every endpoint in a state file with its counts (for `owui-replay state`)."""
    if not path.exists():
        return []
    db = _connect(path)
    try:
        _migrate(db, path)
        names = [
            row[0]
            for row in db.execute(
                "SELECT endpoint FROM endpoints UNION SELECT DISTINCT endpoint FROM ratings "
                "ORDER BY 1"
            )
        ]
    finally:
        db.close()
    result = []
    for name in names:
        with DeliveryState(path, name) as state:
            result.append((name, state.counts()))
    return result


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not an owui-replay delivery state ({exc})") from None
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Check the format version on open; upgrade a 0.1.0 ledger; refuse a newer format."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version > STATE_FORMAT:
        raise InputError(
            f"{path}: delivery state format {version} is newer than this owui-replay "
            f"understands ({STATE_FORMAT}); upgrade owui-replay"
        )
    if version == STATE_FORMAT:
        return
    if version != 0 or (tables and tables != {"delivered"}):
        raise InputError(f"{path}: unknown delivery state format {version} (tables {tables})")
    db.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    if "delivered" in tables:  # 0.1.0: (endpoint, feedback_id, portkey_id, updated_at, ...)
        db.execute(
            "INSERT OR IGNORE INTO ratings (endpoint, rating_key, portkey_id, updated_at, "
            "trace_id, delivered_at) SELECT endpoint, feedback_id, portkey_id, updated_at, "
            "trace_id, recorded_at FROM delivered"
        )
        db.execute(
            "INSERT OR IGNORE INTO endpoints SELECT DISTINCT endpoint, MIN(recorded_at) "
            "FROM delivered GROUP BY endpoint"
        )
        db.execute("DROP TABLE delivered")
    db.execute(f"PRAGMA user_version = {STATE_FORMAT}")
    db.execute("COMMIT")


def content_hash(payload: dict[str, Any]) -> str:
    """What a PUT can change: value, weight (default 1) and metadata, canonically hashed."""
    body = {
        "value": payload.get("value"),
        "weight": payload.get("weight", 1),
        "metadata": payload.get("metadata") or {},
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def rating_of(payload: dict[str, Any], raw: bytes) -> Rating:
    """The identity of one JSONL line. Lines without convert's feedback id are keyed by their
    bytes: the same line is never posted twice, and any other line is a different rating."""
    metadata = payload.get("metadata") or {}
    feedback_id = metadata.get("feedback_id")
    updated_at = str(metadata.get("updated_at") or "")
    content = content_hash(payload)
    if isinstance(feedback_id, str) and feedback_id:
        return Rating(
            feedback_id, int(updated_at) if updated_at.isdigit() else 0, content,
            payload["trace_id"],
        )  # fmt: skip
    return Rating(
        "sha256:" + hashlib.sha256(raw.rstrip(b"\n")).hexdigest(), 0, content, payload["trace_id"]
    )
