"""Sync's incremental read: the /ids list, then only the records that are new or changed.

A sync that already holds this endpoint's history from this Open WebUI (live_ratings rows,
and a live_meta mark naming the mapping options that history was built with) asks
GET /api/v1/evaluations/feedbacks/all/ids (a small list of id and updated_at), picks what the
listener's reconcile would fetch (live_state.new_or_changed: never seen, changed, or seen
within the second of its updated_at), fetches those with GET /feedback/{id} (8 at a time) and
writes them, byte for byte as the server sent them, as the run's export.json in /ids order: so
convert, verify --export, the manifest and the audit trail work unchanged. A 404 between the
list and the fetch is a deletion.

After replay, record_history() writes what the run delivered (or settled as not to be sent)
into live_ratings, so the next run knows what it saw; the ratings the complete list or export
lacks are withdrawn by withdrawal.py. Only an unfiltered admin run keeps that history: a
--user-scope, --since or --until run sees part of the ratings, so it neither reads
incrementally nor withdraws.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.delivery_state import DeliveryState, Known, rating_of
from owui_replay.live_state import Fetched, LiveState, Seen, new_or_changed
from owui_replay.mapping import Mapper, MappingOptions
from owui_replay.openwebui_live import IdEntry, LiveOpenWebUI
from owui_replay.option_change import OptionSet
from owui_replay.option_names import option

FETCH_CONCURRENCY = 8
HISTORY = (
    "sync_history"  # live_meta: the mapping options' fingerprint sync's history was built with
)
FULL_ABOVE = 0.10  # more changed than this share of the history: the export is cheaper


def tracking_refusal(options: MappingOptions, user_scope: bool) -> str | None:
    """Why this run cannot keep a source's history (None: it can)."""
    if user_scope:
        return f"{option('user_scope')} sees only the token owner's ratings"
    if options.since is not None or options.until is not None:
        return f"{option('since')}/{option('until')} see only part of the ratings"
    if drops_identity(options):
        return "the metadata options drop feedback_id or updated_at"
    return None


def drops_identity(options: MappingOptions) -> bool:
    """Whether the payloads lose feedback_id or updated_at: without them a line cannot be
    matched to its Open WebUI record, so nothing can be tracked or withdrawn by it."""
    kept = Mapper(options).select({"feedback_id": "x", "updated_at": "1"})
    return set(kept) != {"feedback_id", "updated_at"}


def fingerprint(options: MappingOptions) -> str:
    """What the delivered payloads depend on: a history built otherwise is not reused. The
    option set's digest, as the delivery state and the listener record it (tracking runs
    never filter by time, so since/until, which it leaves out, cannot tell two apart)."""
    return OptionSet.of_mapping(options).digest


@dataclass
class History:
    """What the state holds of this endpoint's ratings from this source."""

    seen: dict[str, Seen]
    usable: bool  # built by sync with these mapping options: the next read may be incremental


def read_history(state_file: Path, endpoint: str, source: str, options: MappingOptions) -> History:
    if not state_file.exists():
        return History({}, False)
    live = LiveState(state_file, endpoint, source)
    try:
        return History(live.all_seen(), live.meta(HISTORY) == fingerprint(options))
    finally:
        live.close()


@dataclass
class Fetch:
    """What one run read from Open WebUI, and how."""

    mode: str  # "incremental" or "full"
    why_full: str | None = None
    present: dict[str, int] | None = None  # the /ids answer (None: not read, or no /ids)
    stale: int = 0  # records the /ids list said to fetch
    missing: list[str] = field(default_factory=list)  # listed, then 404: deleted meanwhile
    times: dict[str, tuple[float, float]] = field(default_factory=dict)  # per record fetched
    skew: float | None = None  # lower bound of Open WebUI's clock minus ours
    window: tuple[float, float] = (0.0, 0.0)  # when the export was read (a full read)
    bytes_read: int = 0  # response bodies from Open WebUI: /ids, records or the export
    export_bytes: int = 0  # of them, the whole export's (a full read)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "why_full": self.why_full,
            "listed": None if self.present is None else len(self.present),
            "fetched": len(self.times) if self.mode == "incremental" else None,
            "deleted_while_fetching": len(self.missing),
            "bytes_read": self.bytes_read,
            "export_bytes": self.export_bytes,
        }


def present_of(entries: list[IdEntry]) -> dict[str, int]:
    return {entry.id: entry.updated_at for entry in entries}


def fetch_changed(owui: LiveOpenWebUI, fetch: Fetch, seen: dict[str, Seen]) -> list[bytes]:
    """The new and changed records' bodies, in /ids order (404s noted in fetch.missing)."""
    assert fetch.present is not None
    stale = new_or_changed(fetch.present, seen)
    fetch.stale = len(stale)

    def one(feedback_id: str) -> tuple[bytes | None, tuple[float, float]]:
        started = time.time()
        body = owui.record_bytes(feedback_id)
        return body, (started, time.time())

    bodies = []
    with ThreadPoolExecutor(FETCH_CONCURRENCY, thread_name_prefix="fetch") as pool:
        for feedback_id, (body, times) in zip(stale, pool.map(one, stale), strict=True):
            if body is None:
                fetch.missing.append(feedback_id)
            else:
                fetch.times[feedback_id] = times
                bodies.append(body)
    return bodies


def export_body(bodies: list[bytes]) -> bytes:
    """The records as one JSON array, as the export endpoint answers it."""
    return b"[" + b",\n".join(body.strip() for body in bodies) + b"]\n"


@dataclass
class Recorded:
    """What record_history found in a handoff."""

    ids: set[str]  # every feedback id the handoff holds (lines and rejects)
    rows: int


def record_history(
    live: LiveState,
    state: DeliveryState,
    feedback: Path,
    rejects: Path,
    fetch: Fetch,
    complete: bool,
) -> Recorded:
    """Record in live_ratings each rating of the handoff that reached an outcome: delivered
    (with the payload Portkey holds), refused, or (after a replay that ran to its end) judged
    not to be sent. A rating still pending (a stopped run, an unanswered POST) is left out, so
    the next run fetches it again."""
    rows: dict[str, Fetched] = {}
    ids: set[str] = set()

    def add(fid: str, updated_at: int, payload: dict[str, Any] | None) -> None:
        earlier = rows.get(fid)
        if earlier is not None and earlier.updated_at > updated_at:
            return  # a superseded line or reject: the newer version is what was judged
        times = fetch.times.get(fid, fetch.window)
        server = times[0] + fetch.skew if fetch.skew is not None else None
        rows[fid] = Fetched(fid, updated_at, times, payload, payload is None, server)

    with open(feedback, "rb") as handle:
        for raw in handle:
            payload = json.loads(raw)
            metadata = payload.get("metadata") or {}
            fid, updated = metadata.get("feedback_id"), str(metadata.get("updated_at"))
            if not isinstance(fid, str) or not updated.isdigit():
                continue
            ids.add(fid)
            rating = rating_of(payload, raw.rstrip(b"\n"))
            outcome = _outcome(state.lookup(rating.key), rating.content, complete)
            if outcome == "held":
                add(fid, int(updated), payload)
            elif outcome == "settled":
                add(fid, int(updated), None)  # refused, or judged not to be sent
    for fid, updated_at in _rejected(rejects):
        ids.add(fid)
        if fid not in rows and updated_at is not None:
            add(fid, updated_at, None)  # convert rejects it: nothing to send until it changes
    live.record_fetches(list(rows.values()))
    return Recorded(ids, len(rows))


def _outcome(known: Known | None, content: str, complete: bool) -> str | None:
    """Where one line's rating stands: "held" (Portkey holds this version from us), "settled"
    (refused, or judged not to be sent by a replay that ran to its end), None (pending)."""
    if known is not None and known.portkey_id and known.content == content:
        return "held"
    pending = known is not None and not known.portkey_id and known.unknown > 0
    if (known is not None and known.refused_content == content) or (complete and not pending):
        return "settled"
    return None


def _rejected(rejects: Path) -> list[tuple[str, int | None]]:
    """(feedback id, updated_at) of each rejected record that has an id."""
    out: list[tuple[str, int | None]] = []
    if not rejects.exists():
        return out
    with open(rejects, "rb") as handle:
        for raw in handle:
            entry = json.loads(raw)
            fid = entry.get("id")
            record = entry.get("record")
            updated = record.get("updated_at") if isinstance(record, dict) else None
            if isinstance(fid, str):
                ok = isinstance(updated, int) and not isinstance(updated, bool)
                out.append((fid, updated if ok else None))
    return out


def handoff_ids(feedback: Path, rejects: Path) -> set[str]:
    """Every feedback id a handoff holds (its lines and its rejects), for a dry run."""
    ids = {fid for fid, _ in _rejected(rejects)}
    with open(feedback, "rb") as handle:
        for raw in handle:
            fid = (json.loads(raw).get("metadata") or {}).get("feedback_id")
            if isinstance(fid, str):
                ids.add(fid)
    return ids
