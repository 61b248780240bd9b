"""What the listener and sync keep beside the delivery state: the hint queue, where each
rating came from, what was last seen of it, and what was withdrawn.

The tables live in the delivery state's SQLite file (one volume, one backup) but belong to
this module alone: they are created by their own migration step (`live_format` in the
`live_meta` table), after DeliveryState has identified and migrated the file, and the
delivery state never reads them (it only accepts them: delivery_state.LISTENER_TABLES). This
connection stays open until the listener ends: closing any descriptor of the file would drop
the endpoint lock DeliveryState holds on it (POSIX locks belong to the process). Every write
is a committed transaction on a connection with synchronous=FULL: a hint is on disk before the
listener answers 200, even across a power loss.

- live_hints: one row per received event (subject id and event type only: the actor's name
  and email are never stored). Deleted once its subject has an outcome.
- live_ratings: per (endpoint, rating): the Open WebUI it was fetched from (`source`), the
  `updated_at` last fetched and when it was first seen (to tell when that whole second is
  over), the payload Portkey holds from us (to withdraw it with the same value), and when
  it was withdrawn.
- live_meta: the format version, the last reconcile per (endpoint, source), and the mapping
  options sync's history from that source was built with (incremental.py).

The listener, sync (incremental.py) and replay --withdraw-missing share live_ratings: a rating
is one row per endpoint whichever of them delivered it last.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from owui_replay.errors import InputError

LIVE_FORMAT = 1

LIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live_hints (
    seq         INTEGER PRIMARY KEY,  -- the order received (no AUTOINCREMENT: no extra table)
    endpoint    TEXT NOT NULL,
    source      TEXT NOT NULL,         -- the Open WebUI the listener fetches from
    subject     TEXT NOT NULL,         -- a feedback id, or 'all'
    event       TEXT NOT NULL,         -- feedback.created/updated/deleted/deleted_all
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS live_ratings (
    endpoint        TEXT NOT NULL,
    rating_key      TEXT NOT NULL,
    source          TEXT NOT NULL,
    seen_updated_at INTEGER,           -- updated_at of the version last fetched
    seen_since      REAL,              -- wall time it was first seen: after that second ends...
    settled         INTEGER NOT NULL DEFAULT 0,  -- ...a later fetch saw its final content
    payload         TEXT,              -- what Portkey holds from us (NULL: nothing)
    withdrawn_at    TEXT,
    PRIMARY KEY (endpoint, rating_key)
) WITHOUT ROWID;
"""

SETTLE_SECONDS = 1.5  # a fetch this long after a version was first seen saw its final content


@dataclass(frozen=True)
class Hint:
    """An event's subject, durably recorded before the event was acknowledged."""

    seq: int
    subject: str
    event: str


@dataclass(frozen=True)
class Fetched:
    """One fetched version's outcome, to record (see LiveState.record_fetch)."""

    key: str
    updated_at: int
    fetched: tuple[float, float]
    payload: dict[str, Any] | None
    keep_payload: bool
    server_started: float | None = None


class Seen(NamedTuple):
    """What was last fetched of one rating (a tuple: a history of 100,000 is built per run)."""

    source: str
    updated_at: int | None
    seen_since: float | None
    settled: bool
    held: bool  # Portkey may hold a payload from us that is not withdrawn
    withdrawn: bool
    payload: dict[str, Any] | None = None  # read by seen() only, not by all_seen()


def new_or_changed(present: dict[str, int], seen: dict[str, Seen]) -> list[str]:
    """The ids (in PRESENT's order: /ids is newest first) to fetch: never seen, changed since,
    seen within the second of their updated_at (a change in that second looks alike), or
    withdrawn although Open WebUI lists them."""
    return [
        fid
        for fid, updated in present.items()
        if (s := seen.get(fid)) is None
        or s.updated_at != updated
        or not s.settled
        or s.withdrawn  # withdrawn, yet listed again (a restored database): send it back
    ]


class LiveState:
    """The listener's tables for one (Portkey endpoint, Open WebUI source). Thread-safe."""

    def __init__(self, path: Path, endpoint: str, source: str) -> None:
        self.endpoint = endpoint
        self.source = source
        try:
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30
            )
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                _migrate(self._db, path)
            except BaseException:
                self._db.close()  # refused: the caller gets no object to close
                raise
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path}: not an owui-replay delivery state ({exc})") from None
        self._lock = threading.Lock()

    # -- hints --------------------------------------------------------------------------

    def add_hint(self, subject: str, event: str) -> int:
        """Committed (fsynced) before the event is acknowledged."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO live_hints (endpoint, source, subject, event, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.endpoint, self.source, subject, event, time.time()),
            )
        return int(cursor.lastrowid or 0)

    def hints(self, limit: int = 500) -> list[Hint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, subject, event FROM live_hints WHERE endpoint = ? AND source = ? "
                "ORDER BY seq LIMIT ?",
                (self.endpoint, self.source, limit),
            ).fetchall()
        return [Hint(*row) for row in rows]

    def drop_hints(self, seqs: list[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM live_hints WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")

    def queue_depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM live_hints WHERE endpoint = ? AND source = ?",
                (self.endpoint, self.source),
            ).fetchone()
        return int(n)

    # -- ratings ------------------------------------------------------------------------

    def seen(self, key: str) -> Seen | None:
        with self._lock:
            row = self._db.execute(
                "SELECT source, seen_updated_at, seen_since, settled, payload, withdrawn_at "
                "FROM live_ratings WHERE endpoint = ? AND rating_key = ?",
                (self.endpoint, key),
            ).fetchone()
        if row is None:
            return None
        payload = json.loads(row[4]) if row[4] else None
        withdrawn = row[5] is not None
        held = payload is not None and not withdrawn
        return Seen(row[0], row[1], row[2], bool(row[3]), held, withdrawn, payload)

    def all_seen(self) -> dict[str, Seen]:
        """Every rating this endpoint received from this source (without the payloads: a
        reconcile of a large history must not hold them all)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rating_key, source, seen_updated_at, seen_since, settled, "
                "payload IS NOT NULL AND withdrawn_at IS NULL, withdrawn_at IS NOT NULL "
                "FROM live_ratings WHERE endpoint = ? AND source = ?",
                (self.endpoint, self.source),
            ).fetchall()
        return {r[0]: Seen(r[1], r[2], r[3], bool(r[4]), bool(r[5]), bool(r[6])) for r in rows}

    def other_sources(self) -> list[str]:
        """The other Open WebUIs this endpoint received ratings from."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT source FROM live_ratings WHERE endpoint = ? AND source != ?",
                (self.endpoint, self.source),
            ).fetchall()
        return sorted(row[0] for row in rows)

    def unattributed(self) -> list[str]:
        """Ratings the delivery state says Portkey holds at this endpoint (by Open WebUI id)
        that were never recorded as received from this source: delivered before sources were
        recorded, or from another Open WebUI (or this one under another address). Ratings
        already withdrawn are not counted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.rating_key FROM ratings AS r WHERE r.endpoint = ?1 "
                "AND r.portkey_id IS NOT NULL AND r.rating_key NOT LIKE 'sha256:%' "
                "AND NOT EXISTS (SELECT 1 FROM live_ratings AS l WHERE l.endpoint = ?1 "
                "AND l.rating_key = r.rating_key "
                "AND (l.source = ?2 OR l.withdrawn_at IS NOT NULL))",
                (self.endpoint, self.source),
            ).fetchall()
        return [row[0] for row in rows]

    def record_fetch(
        self,
        key: str,
        updated_at: int,
        fetched: tuple[float, float],
        payload: dict[str, Any] | None,
        keep_payload: bool,
        server_started: float | None = None,
    ) -> None:
        """A fetched version reached its outcome. `fetched` is (started, answered) wall times;
        `payload` is what Portkey now holds from us (keep_payload: leave the stored one);
        `server_started`: a lower bound of Open WebUI's own clock when the fetch started."""
        with self._lock:
            self._record(Fetched(key, updated_at, fetched, payload, keep_payload, server_started))

    def record_fetches(self, rows: list[Fetched]) -> None:
        """Many outcomes in one transaction (a sync of a large history)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    self._record(row)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _record(self, row: Fetched) -> None:
        started, answered = row.fetched
        before = self._db.execute(
            "SELECT seen_updated_at, seen_since FROM live_ratings "
            "WHERE endpoint = ? AND rating_key = ?",
            (self.endpoint, row.key),
        ).fetchone()
        same = before is not None and before[0] == row.updated_at
        since = before[1] if same and before[1] else answered
        settled = started >= since + SETTLE_SECONDS or (
            row.server_started is not None and row.server_started >= row.updated_at + 1
        )  # the whole second of updated_at was over, on Open WebUI's clock, before the read
        payload = row.payload
        text = json.dumps(payload, ensure_ascii=False, sort_keys=True) if payload else None
        self._db.execute(
            "INSERT INTO live_ratings (endpoint, rating_key, source, seen_updated_at, "
            "seen_since, settled, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
            "ON CONFLICT (endpoint, rating_key) DO UPDATE SET source = ?3, "
            "seen_updated_at = ?4, seen_since = ?5, settled = ?6, "
            "payload = CASE WHEN ?8 THEN payload ELSE ?7 END, "
            "withdrawn_at = CASE WHEN ?8 THEN withdrawn_at ELSE NULL END",  # held again
            (self.endpoint, row.key, self.source, row.updated_at, since, int(settled), text,
             int(row.keep_payload)),
        )  # fmt: skip

    def note_sending(self, key: str, payload: dict[str, Any]) -> None:
        """Before a send leaves: Portkey may hold this payload from now on (so a deletion
        finds it), while the version stays unseen until the send has an outcome."""
        text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._db.execute(
                "INSERT INTO live_ratings (endpoint, rating_key, source, payload) "
                "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (endpoint, rating_key) DO UPDATE SET "
                "source = ?3, payload = ?4, withdrawn_at = NULL",
                (self.endpoint, key, self.source, text),
            )

    def forget_payload(self, key: str) -> None:
        """Nothing at Portkey can be withdrawn for this rating (said once, then dropped)."""
        with self._lock:
            self._db.execute(
                "UPDATE live_ratings SET payload = NULL WHERE endpoint = ? AND rating_key = ?",
                (self.endpoint, key),
            )

    def mark_withdrawn(self, key: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE live_ratings SET withdrawn_at = ? WHERE endpoint = ? AND rating_key = ?",
                (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), self.endpoint, key),
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), SUM(payload IS NOT NULL AND withdrawn_at IS NULL), "
                "SUM(withdrawn_at IS NOT NULL) FROM live_ratings "
                "WHERE endpoint = ? AND source = ?",
                (self.endpoint, self.source),
            ).fetchone()
        names = ("tracked", "held", "withdrawn")
        return {name: int(value or 0) for name, value in zip(names, row, strict=True)}

    # -- reconcile bookkeeping ----------------------------------------------------------

    def set_meta(self, name: str, value: Any) -> None:
        key = f"{name} {self.endpoint} {self.source}"
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO live_meta VALUES (?, ?)", (key, json.dumps(value))
            )

    def meta(self, name: str) -> Any:
        key = f"{name} {self.endpoint} {self.source}"
        with self._lock:
            row = self._db.execute("SELECT value FROM live_meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """The listener's own migration step, separate from the delivery state's."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "live_meta" in tables:
        row = db.execute("SELECT value FROM live_meta WHERE key = 'live_format'").fetchone()
        version = int(row[0]) if row else 0
        if version > LIVE_FORMAT:
            raise InputError(
                f"{path}: listener state format {version} is newer than this owui-replay "
                f"understands ({LIVE_FORMAT}); upgrade owui-replay"
            )
        if version == LIVE_FORMAT:
            return
    db.execute("BEGIN IMMEDIATE")
    for statement in LIVE_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT OR REPLACE INTO live_meta VALUES ('live_format', ?)", (str(LIVE_FORMAT),))
    db.execute("COMMIT")
