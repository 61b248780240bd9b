"""The delivery state: what each Portkey endpoint holds of each rating. The one source of truth.

One SQLite file in WAL mode (default $XDG_STATE_HOME/owui-replay/ledger.sqlite3), shared by
every run of every file. A row per (endpoint, rating key):

- the delivered version: Portkey's feedback id, the `updated_at` and the content hash of the
  payload Portkey acknowledged;
- `unknown`: POST attempts whose outcome is not known. It goes up by one in the transaction
  committed *before* a POST leaves and down by one when the server answers (any status), so
  after a kill at any point a rating with `unknown > 0` may be stored at Portkey: uncertain.
- what Portkey refused (content hash, status, message), per endpoint;
- which mapping options produced the delivered version (`options`, the sha256 of the option
  set, whose JSON is kept once in `option_sets`; NULL: unknown, e.g. a row older than format
  4 or a handoff without a manifest), so a change that comes only from the options is told
  apart from a change made in Open WebUI.

Every intent and every outcome is its own committed transaction, so there is no lag window
between a request and the record of it. With `synchronous=NORMAL` a commit is a write(2) to
the WAL: it survives the process being killed; only a power loss or kernel crash can drop the
last commits (`power_safe=True`, the command line's --power-safe, fsyncs every commit to close
that too).

The file is what counts, not its name: the endpoint lock is a byte-range lock on the state
file itself, so two runs through a symlink or another mount path exclude each other (a file
with hard links is refused: SQLite would keep a WAL per name). A file is identified (format,
tables) before anything writes to it, so a foreign or newer file is refused unchanged; every
SQLite or OS failure becomes one StateError naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from owui_replay.atomic import fsync_dir, partial_path
from owui_replay.errors import ExitCode, ReplayError, StateError
from owui_replay.option_names import command_option

# `listen` keeps its own tables in the same file, created and versioned by live_state.py
LISTENER_TABLES = frozenset({"live_meta", "live_hints", "live_ratings"})
STATE_FORMAT = 4  # 3: no options; 2: no taken_at, no forgotten_at; 0.1.0: `delivered` only
LOCK_BASE = 1 << 32  # endpoint locks live above SQLite's own lock bytes (at 1 GiB)

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
    taken_at        INTEGER,           -- when the export of the delivered version was taken (ms)
    options         TEXT,              -- option_sets.digest of the delivered version, if known
    PRIMARY KEY (endpoint, rating_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS option_sets (
    digest     TEXT PRIMARY KEY,       -- sha256 of the canonical options JSON
    options    TEXT NOT NULL,          -- the mapping options that shape payloads, as JSON
    first_used TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint     TEXT PRIMARY KEY,
    first_seen   TEXT NOT NULL,
    forgotten_at TEXT                  -- the last `state --forget`: deliveries before it are gone
);
"""
UPGRADE_2 = (
    "ALTER TABLE ratings ADD COLUMN taken_at INTEGER",
    "ALTER TABLE endpoints ADD COLUMN forgotten_at TEXT",
)
UPGRADE_3 = (  # the rows delivered before keep options NULL: unknown, never guarded
    "ALTER TABLE ratings ADD COLUMN options TEXT",
    "CREATE TABLE option_sets (digest TEXT PRIMARY KEY, options TEXT NOT NULL, "
    "first_used TEXT NOT NULL) WITHOUT ROWID",
)


class LineState(Enum):
    """What a line is, measured against what its endpoint holds; decides what replay does."""

    NEW = "new"  # never sent to this endpoint: POST
    UNCERTAIN = "uncertain"  # a POST got no answer, may be stored: resend (announced) or skip
    CHANGED = "changed"  # delivered, but the payload differs: PUT to its Portkey id
    # delivered, same updated_at, made with other mapping options: a PUT that only the options
    # cause (replay says so; sync and listen refuse it unless the change is accepted)
    OPTIONS = "changed-by-options"
    DELIVERED = "delivered"  # Portkey holds exactly this: skip
    STALE = "stale"  # Portkey holds a newer version: skip
    BACKWARDS = "backwards"  # changed, updated_at went back, no export time: --send-older
    REFUSED = "refused"  # Portkey refused this exact payload: skip unless --retry-refused
    NOT_UPDATABLE = "not-updatable"  # changed, but Portkey never said which feedback holds it


@dataclass(frozen=True)
class Rating:
    """A line's identity: whose rating, which version, what content."""

    key: str
    updated_at: int
    content: str
    trace_id: str
    taken_at: int | None = None  # when the handoff's export was taken (ms), if known
    send_older: bool = False  # --send-older chose this version although updated_at went back
    options: str | None = None  # digest of the mapping options that made it; None: unknown


@dataclass(frozen=True)
class Known:
    """What the state holds for one rating at one endpoint."""

    portkey_id: str | None
    updated_at: int | None
    content: str | None
    unknown: int
    refused_content: str | None
    taken_at: int | None = None  # of the delivered version's export (ms), if known
    options: str | None = None  # digest of the options that made the delivered version

    @property
    def delivered(self) -> bool:
        return self.portkey_id is not None


def judge(
    rating: Rating,
    known: Known | None,
    *,
    retry_refused: bool = False,
    send_older: bool = False,
) -> LineState:
    if known is None:
        return LineState.NEW
    if known.delivered:
        if known.content is not None and known.content == rating.content:
            return LineState.DELIVERED
        if known.content is None and rating.updated_at == known.updated_at:
            return LineState.DELIVERED  # a 0.1.0 row: no content hash, same version
        newer = supersedes(rating.updated_at, rating.taken_at, known.updated_at, known.taken_at)
        if newer is False:
            return LineState.STALE
        if newer is None and not send_older:
            return LineState.BACKWARDS
        if not known.portkey_id:
            return LineState.NOT_UPDATABLE
        return LineState.OPTIONS if only_options_differ(rating, known) else LineState.CHANGED
    if known.refused_content == rating.content and not retry_refused:
        return LineState.REFUSED
    return LineState.UNCERTAIN if known.unknown > 0 else LineState.NEW


def only_options_differ(rating: Rating, known: Known) -> bool:
    """The content differs, Open WebUI's version did not move, and this run's mapping options
    are known and differ from the delivered version's: the options alone make the change. A
    delivered version whose options were never recorded (delivered before state format 4, or
    from a handoff without a manifest) counts too: Open WebUI did not change it, so only the
    mapping can have. A version that moved in Open WebUI counts as changed there, even when the
    options changed too."""
    return (
        rating.options is not None
        and rating.options != known.options
        and rating.updated_at == known.updated_at
    )


def supersedes(
    updated_at: int, taken_at: int | None, held_updated_at: int | None, held_taken_at: int | None
) -> bool | None:
    """Whether a version should replace the one Portkey holds. The export taken later is the
    truth when both export times are known and differ (a clock that went back, a restored
    database); otherwise the later `updated_at`. None: it went back and nothing tells which
    export is newer."""
    if taken_at is not None and held_taken_at is not None and taken_at != held_taken_at:
        return taken_at > held_taken_at
    if held_updated_at is None or updated_at >= held_updated_at:
        return True
    return None


def default_state_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "owui-replay" / "ledger.sqlite3"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StateBusy(ReplayError):
    """Another run holds this endpoint in this state file (exit 8)."""

    code = ExitCode.BUSY


class DeliveryState:
    """The store for one endpoint. Thread-safe: workers share one connection under a lock."""

    def __init__(
        self, path: Path, endpoint: str, *, power_safe: bool = False, create: bool = True
    ) -> None:
        self.path = path
        self.endpoint = endpoint
        self.failure: StateError | None = None  # the first failure, even one a worker hit
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._closed = False
        if not create and not path.exists():
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            _migrate(self._db, 0, set())  # a dry run against a state not created yet
        else:
            self._db = open_state(path, create=True)
        try:
            with self._guard("write"):
                self._db.execute(f"PRAGMA synchronous={'FULL' if power_safe else 'NORMAL'}")
        except StateError:
            self._db.close()
            raise

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Every use of the file: a failure becomes one line naming it, and is remembered."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            error = state_failure(self.path, doing, exc)
            self.failure = self.failure or error
            raise error from None

    # -- exclusion ------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold this endpoint for the run: a second replay to it refuses instead of racing.
        The lock is on the state file itself (a byte range per endpoint, far above SQLite's
        own), so it follows the file through any name: a symlink, a bind mount, another path.
        POSIX locks belong to the process and go when it closes *any* descriptor of the file:
        one process holds one DeliveryState per file, and close() closes SQLite's first."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise state_failure(self.path, "lock", exc) from None
        digest = hashlib.sha256(self.endpoint.encode()).digest()[:4]
        offset = LOCK_BASE + (int.from_bytes(digest, "big") >> 1)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            os.close(fd)
            raise StateBusy(
                f"another owui-replay run is sending to {self.endpoint} (state {self.path}); "
                "it holds the endpoint until it ends"
            ) from None
        self._lock_fd = fd

    def knows_endpoint(self) -> bool:
        """Whether this state has any record of the endpoint (a forgotten one counts)."""
        with self._lock, self._guard("read"):
            row = self._db.execute(
                "SELECT 1 FROM endpoints WHERE endpoint = ?1 "
                "UNION ALL SELECT 1 FROM ratings WHERE endpoint = ?1 LIMIT 1",
                (self.endpoint,),
            ).fetchone()
        return row is not None

    def forgotten_at(self) -> str | None:
        """When `state --forget` last dropped this endpoint (ISO 8601 UTC), if ever."""
        with self._lock, self._guard("read"):
            row = self._db.execute(
                "SELECT forgotten_at FROM endpoints WHERE endpoint = ?", (self.endpoint,)
            ).fetchone()
        return row[0] if row else None

    def endpoints(self) -> list[str]:
        """Every endpoint this state holds deliveries for (forgotten ones left out)."""
        with self._lock, self._guard("read"):
            rows = self._db.execute(
                "SELECT DISTINCT endpoint FROM ratings WHERE portkey_id IS NOT NULL OR unknown > 0"
            ).fetchall()
        return sorted(row[0] for row in rows)

    # -- reading --------------------------------------------------------------------------

    def lookup(self, key: str) -> Known | None:
        with self._lock, self._guard("read"):
            row = self._db.execute(
                "SELECT portkey_id, updated_at, content, unknown, refused_content, taken_at, "
                "options FROM ratings "
                "WHERE endpoint = ? AND rating_key = ?",
                (self.endpoint, key),
            ).fetchone()
        return Known(*row) if row else None

    def note_options(self, digest: str, options_json: str) -> None:
        """Keep the JSON of an option set once, before versions made with it are recorded."""
        with self._lock, self._guard("write"):
            self._db.execute(
                "INSERT OR IGNORE INTO option_sets (digest, options, first_used) VALUES (?, ?, ?)",
                (digest, options_json, _now()),
            )

    def option_set(self, digest: str) -> dict[str, Any] | None:
        """The options an option-set digest stands for; None when this state never kept it."""
        with self._lock, self._guard("read"):
            row = self._db.execute(
                "SELECT options FROM option_sets WHERE digest = ?", (digest,)
            ).fetchone()
        return dict(json.loads(row[0])) if row else None

    def counts(self) -> dict[str, int]:
        """Ratings at this endpoint by what is known of them."""
        with self._lock, self._guard("read"):
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
        with self._lock, self._guard("write"):
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
        got no answer and were then sent again. A newer delivered version is never replaced
        by an older one (supersedes), unless --send-older chose it."""
        answered = 1 if method == "POST" else 0
        now = _now()
        with self._lock, self._guard("write"):
            self._db.execute("BEGIN IMMEDIATE")
            extra = 0
            for i, r in enumerate(ratings):
                before, held_at, held_taken = self._db.execute(
                    "SELECT MAX(unknown - ?, 0), updated_at, taken_at FROM ratings "
                    "WHERE endpoint = ? AND rating_key = ?",
                    (answered, self.endpoint, r.key),
                ).fetchone()
                extra += before
                newer = supersedes(r.updated_at, r.taken_at, held_at, held_taken)
                keep = newer is True or (newer is None and r.send_older)
                self._db.execute(
                    "UPDATE ratings SET "
                    "portkey_id = CASE WHEN ?1 = '' THEN COALESCE(portkey_id, '') ELSE ?1 END, "
                    "updated_at = CASE WHEN ?9 THEN ?2 ELSE updated_at END, "
                    "content = CASE WHEN ?9 THEN ?3 ELSE content END, "
                    "taken_at = CASE WHEN ?9 THEN ?10 ELSE taken_at END, "
                    "options = CASE WHEN ?9 THEN ?11 ELSE options END, "
                    "trace_id = ?4, delivered_at = ?5, "
                    "extra_copies = extra_copies + MAX(unknown - ?6, 0), unknown = 0, "
                    "refused_content = NULL, refused_status = NULL, refused_detail = NULL "
                    "WHERE endpoint = ?7 AND rating_key = ?8",
                    (ids[i] or "", r.updated_at, r.content, r.trace_id, now, answered,
                     self.endpoint, r.key, bool(keep), r.taken_at, r.options),
                )  # fmt: skip
            self._db.execute("COMMIT")
        return extra

    def answered(self, ratings: Sequence[Rating], method: str) -> None:
        """The server answered without storing (429, 5xx, a stop): this attempt is known."""
        if method != "POST":
            return
        with self._lock, self._guard("write"):
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
        with self._lock, self._guard("write"):
            self._db.execute(
                "UPDATE ratings SET unknown = MAX(unknown - ?, 0), refused_content = ?, "
                "refused_status = ?, refused_detail = ? WHERE endpoint = ? AND rating_key = ?",
                (answered, rating.content, status, detail[:500], self.endpoint, rating.key),
            )

    # -- housekeeping ---------------------------------------------------------------------

    def touch_endpoint(self) -> None:
        with self._lock, self._guard("write"):
            self._db.execute(
                "INSERT OR IGNORE INTO endpoints (endpoint, first_seen) VALUES (?, ?)",
                (self.endpoint, _now()),
            )

    def forget(self) -> int:
        """Drop everything known about this endpoint (start over); returns the rows removed.
        The endpoint stays named as forgotten: the journals' deliveries to it are then no
        reason to refuse the next replay (it was started over on purpose)."""
        with self._lock, self._guard("write"):
            self._db.execute("BEGIN IMMEDIATE")
            removed = self._db.execute(
                "DELETE FROM ratings WHERE endpoint = ?", (self.endpoint,)
            ).rowcount
            self._db.execute(
                "INSERT INTO endpoints (endpoint, first_seen, forgotten_at) VALUES (?1, ?2, ?2) "
                "ON CONFLICT (endpoint) DO UPDATE SET forgotten_at = ?2",
                (self.endpoint, _now()),
            )
            self._db.execute("COMMIT")
        return int(removed)

    def close(self) -> None:
        """A clean end checkpoints the WAL into the file (TRUNCATE), so a plain `cp` of the
        state file alone copies everything."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            if self._lock_fd is not None and self.failure is None:
                with contextlib.suppress(sqlite3.Error):  # another run writing: it will
                    self._db.execute("PRAGMA busy_timeout = 0")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
    db = open_state(path, create=False)
    try:
        names = [
            row[0]
            for row in db.execute(
                "SELECT endpoint FROM endpoints WHERE forgotten_at IS NULL "
                "UNION SELECT DISTINCT endpoint FROM ratings ORDER BY 1"
            )
        ]
    except sqlite3.Error as exc:
        raise state_failure(path, "read", exc) from None
    finally:
        db.close()
    result = []
    for name in names:
        with DeliveryState(path, name) as state:
            result.append((name, state.counts()))
    return result


def backup_state(path: Path, target: Path) -> dict[str, int]:
    """A consistent copy of the state at this moment, WAL included, through SQLite's backup
    API; safe while a replay runs. The copy is one self-contained file (rollback journal
    mode), written as TARGET.partial and renamed. Returns the copy's endpoint count."""
    if not path.exists():
        raise StateError(f"{path}: no delivery state here (nothing to back up)")
    if not target.parent.is_dir():
        raise StateError(f"{target}: cannot write the backup there: {target.parent} is no folder")
    if target.exists() and os.path.samefile(path, target):
        raise StateError(f"{target} is the delivery state itself: name another file")
    source = open_state(path, create=False, upgrade=False)
    partial = partial_path(target)
    try:
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            (endpoints,) = copy.execute("SELECT COUNT(DISTINCT endpoint) FROM ratings").fetchone()
        finally:
            copy.close()
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
        fsync_dir(target.parent)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise state_failure(path, f"copy to {target}", exc) from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise state_failure(Path(exc.filename or partial), "write", exc) from None
    finally:
        source.close()
    return {"endpoints": int(endpoints)}


def state_failure(path: Path, doing: str, exc: BaseException) -> StateError:
    """One line: the file, what could not be done, the cause, and what to check."""
    cause = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = str(exc).lower()
    if path.exists() and not os.access(path, os.W_OK):
        hint = "; the file is read-only"
    elif path.parent.is_dir() and not os.access(path.parent, os.W_OK):
        hint = f"; its folder {path.parent} is read-only (SQLite writes -wal and -shm there)"
    elif "malformed" in text or "not a database" in text:
        hint = (
            f"; the file is damaged: restore a copy ({command_option('state', 'backup')} makes one)"
        )
    elif "disk is full" in text or "disk i/o" in text or "no space" in text:
        hint = "; is the disk full?"
    elif "unable to open" in text:
        hint = "; check that its folder exists and can be written"
    else:
        hint = ""
    return StateError(f"{path}: cannot {doing} the delivery state: {cause}{hint}")


def open_state(path: Path, *, create: bool, upgrade: bool = True) -> sqlite3.Connection:
    """Connect, identify the file *before* anything writes to it (a foreign or newer file is
    refused unchanged), then switch to WAL and upgrade an older format."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_hard_links(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    except (sqlite3.Error, OSError) as exc:
        raise state_failure(path, "open", exc) from None
    try:
        version, tables = _identify(db, path)
        if upgrade:
            db.execute("PRAGMA journal_mode=WAL")
            _migrate(db, version, tables)
    except BaseException as exc:
        db.close()
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise state_failure(path, "open", exc) from None
        raise
    return db


def _refuse_hard_links(path: Path) -> None:
    """SQLite keeps the WAL beside the name it was opened by (it follows symlinks, not hard
    links): two runs through two hard links would write two WALs into one file, corrupting
    it. Such a state is refused before SQLite touches it."""
    if path.is_dir():
        raise StateError(f"{path} is a folder, not a delivery state file: name a file in it")
    try:
        links = os.stat(path).st_nlink
    except FileNotFoundError:
        return
    if links > 1:
        raise StateError(
            f"{path}: the delivery state has {links} names (hard links); SQLite keeps its WAL "
            "beside each name, so runs through two names would corrupt it. Keep one name (a "
            "symlink is safe); nothing was changed"
        )


def _identify(db: sqlite3.Connection, path: Path) -> tuple[int, set[str]]:
    """The format version and tables, read without writing; refuse what is not ours."""
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise StateError(
                f"{path}: not an owui-replay delivery state ({exc}); nothing was changed"
            ) from None
        raise
    if version > STATE_FORMAT and {"ratings", "endpoints"} <= tables:
        raise StateError(
            f"{path}: delivery state format {version} is newer than this owui-replay "
            f"understands ({STATE_FORMAT}); upgrade owui-replay. Nothing was changed"
        )
    ours = {
        0: (set(), {"delivered"}),
        2: ({"ratings", "endpoints"},),
        3: ({"ratings", "endpoints"}, {"ratings", "endpoints", *LISTENER_TABLES}),
        4: (
            {"ratings", "endpoints", "option_sets"},
            {"ratings", "endpoints", "option_sets", *LISTENER_TABLES},
        ),
    }
    if version not in ours or tables not in ours[version]:
        raise StateError(
            f"{path}: not an owui-replay delivery state (a SQLite file with format "
            f"{version} and tables {sorted(tables)}); nothing was changed"
        )
    return int(version), tables


def _migrate(db: sqlite3.Connection, version: int, tables: set[str]) -> None:
    """Create a new state; upgrade a format-2 or -3 state or a 0.1.0 ledger in place, in one
    transaction (a failure leaves the file as it was)."""
    if version == STATE_FORMAT:
        return
    db.execute("BEGIN IMMEDIATE")
    if version in (2, 3):
        for statement in (UPGRADE_2 if version == 2 else ()) + UPGRADE_3:
            db.execute(statement)
    else:
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
            "INSERT OR IGNORE INTO endpoints (endpoint, first_seen) SELECT DISTINCT endpoint, "
            "MIN(recorded_at) FROM delivered GROUP BY endpoint"
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


def rating_of(
    payload: dict[str, Any], raw: bytes, taken_at: int | None = None, options: str | None = None
) -> Rating:
    """The identity of one JSONL line. Lines without convert's feedback id are keyed by their
    bytes: the same line is never posted twice, and any other line is a different rating.
    TAKEN_AT: when the handoff's export was taken, if known; OPTIONS: the digest of the mapping
    options that made it, if known."""
    metadata = payload.get("metadata") or {}
    feedback_id = metadata.get("feedback_id")
    updated_at = str(metadata.get("updated_at") or "")
    content = content_hash(payload)
    if isinstance(feedback_id, str) and feedback_id:
        return Rating(
            feedback_id, int(updated_at) if updated_at.isdigit() else 0, content,
            payload["trace_id"], taken_at, options=options,
        )  # fmt: skip
    return Rating(
        "sha256:" + hashlib.sha256(raw.rstrip(b"\n")).hexdigest(), 0, content,
        payload["trace_id"], taken_at, options=options,
    )  # fmt: skip
