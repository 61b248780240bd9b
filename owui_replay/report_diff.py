"""New, changed and removed ratings against an earlier handoff (`report --previous`).

A rating is what the delivery state calls one (the feedback id, else the line's bytes) and it
has changed when what a PUT would carry (value, weight, metadata) differs. Both files' keys go
to a temporary SQLite file rather than into dicts, so a million lines cost a few MB of memory.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.delivery_state import rating_of
from owui_replay.feedback_file import iter_lines, scan_feedback

_BATCH = 5000


@dataclass(frozen=True)
class Change:
    """A rating in both files whose payload differs, or one that only the previous file has."""

    feedback_id: str
    before: dict[str, Any]
    after: dict[str, Any] | None  # None: removed

    def changed_keys(self) -> list[str]:
        """Which of value, weight and metadata keys differ (removed: none)."""
        if self.after is None:
            return []
        out = [k for k in ("value", "weight") if self.before.get(k) != self.after.get(k)]
        old, new = self.before.get("metadata") or {}, self.after.get("metadata") or {}
        out += [f"metadata.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return out


@dataclass
class Comparison:
    previous_path: Path
    rows: int
    previous_lines: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    value_flips: int = 0  # changed ratings whose value changed (a thumb turned)
    changes: list[Change] = field(default_factory=list)
    removals: list[Change] = field(default_factory=list)


class Comparer:
    """Collect the previous file's ratings, then the current file's (through `visit`)."""

    def __init__(self, previous: Path, rows: int) -> None:
        self.previous = previous
        self.rows = rows
        self._folder = tempfile.TemporaryDirectory(prefix="owui-replay-report-")
        self._db = sqlite3.connect(Path(self._folder.name) / "compare.sqlite3")
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE previous (key TEXT PRIMARY KEY, content TEXT, value INT, line INT);"
        )
        self._pending: list[tuple[str, str, int, int]] = []
        self._table = "previous"
        try:
            self.previous_lines = scan_feedback(previous, self._visit).lines
        except BaseException:  # an unreadable --previous: no database or folder left behind
            self.close()
            raise
        self._flush()
        self.restart()

    def restart(self) -> None:
        """Forget the current file's lines (its pass is being made again)."""
        self._pending.clear()
        self._db.executescript(
            "DROP TABLE IF EXISTS current;"
            "CREATE TABLE current (key TEXT PRIMARY KEY, content TEXT, value INT, line INT);"
        )
        self._table = "current"

    def visit(self, number: int, payload: Any, raw: bytes) -> None:
        self._visit(number, payload, raw)

    def _visit(self, number: int, payload: Any, raw: bytes) -> None:
        rating = rating_of(payload, raw)
        self._pending.append((rating.key, rating.content, payload["value"], number))
        if len(self._pending) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        # a key twice in one file: the last line wins, as the delivery state would see it
        self._db.executemany(
            f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?, ?, ?)", self._pending
        )
        self._pending.clear()

    def finish(self, current: Path) -> Comparison:
        self._flush()
        db = self._db
        db.execute("CREATE INDEX IF NOT EXISTS current_key ON current (key)")
        result = Comparison(self.previous, self.rows, self.previous_lines)

        def one(sql: str) -> int:
            return int(db.execute(sql).fetchone()[0])

        join = "FROM current c JOIN previous p ON p.key = c.key"
        result.new = one(
            "SELECT COUNT(*) FROM current c WHERE NOT EXISTS "
            "(SELECT 1 FROM previous p WHERE p.key = c.key)"
        )
        result.changed = one(f"SELECT COUNT(*) {join} WHERE p.content != c.content")
        result.unchanged = one(f"SELECT COUNT(*) {join} WHERE p.content = c.content")
        result.value_flips = one(f"SELECT COUNT(*) {join} WHERE p.value != c.value")
        result.removed = one(
            "SELECT COUNT(*) FROM previous p WHERE NOT EXISTS "
            "(SELECT 1 FROM current c WHERE c.key = p.key)"
        )
        changed = db.execute(
            f"SELECT p.key, p.line, c.line {join} WHERE p.content != c.content "
            "ORDER BY c.line LIMIT ?",
            (self.rows,),
        ).fetchall()
        removed = db.execute(
            "SELECT p.key, p.line FROM previous p WHERE NOT EXISTS "
            "(SELECT 1 FROM current c WHERE c.key = p.key) ORDER BY p.line LIMIT ?",
            (self.rows,),
        ).fetchall()
        before = _payloads(self.previous, {r[1] for r in changed} | {r[1] for r in removed})
        after = _payloads(current, {r[2] for r in changed})
        result.changes = [Change(k, before[p], after[c]) for k, p, c in changed]
        result.removals = [Change(k, before[p], None) for k, p in removed]
        return result

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()


def _payloads(path: Path, lines: set[int]) -> dict[int, dict[str, Any]]:
    """The payloads on some 0-based lines of a file (only the few a table shows)."""
    return {number: json.loads(raw) for number, raw in iter_lines(path, lines)} if lines else {}
