"""What sync and replay --withdraw-missing keep of one Open WebUI (the source), and the
withdrawal of what it no longer has.

read() (sync): chooses the read (incremental when the state holds this endpoint's history from
this source and the server lists /ids; else the whole export, as before) and writes the run's
export.json with its sidecars either way.

keep_and_withdraw() (sync after replay, and replay --withdraw-missing): records what the run
delivered in live_ratings (the next run's history), then withdraws the ratings Portkey holds
from this source that Open WebUI no longer has: those the complete /ids list lacks (each
confirmed by a 404) or the complete export lacks. Never on a run that sees part of the
ratings, never more than --max-withdraw at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from owui_replay.atomic import write_bytes_atomic
from owui_replay.delivery_state import DeliveryState
from owui_replay.download import Downloaded, download, origin, taken_now, write_sidecars
from owui_replay.errors import UsageError
from owui_replay.handoff import HandoffPaths
from owui_replay.incremental import (
    FULL_ABOVE,
    HISTORY,
    Fetch,
    History,
    export_body,
    fetch_changed,
    fingerprint,
    handoff_ids,
    present_of,
    record_history,
)
from owui_replay.live_state import LiveState, Seen, new_or_changed
from owui_replay.openwebui_live import LiveOpenWebUI
from owui_replay.option_names import option
from owui_replay.portkey_client import PortkeyClient
from owui_replay.replaying import handoff_taken_at
from owui_replay.secrets import Secret
from owui_replay.settings import ReplaySettings, SyncSettings
from owui_replay.withdrawal import held_and_gone, over_cap, withdraw


def read(
    settings: SyncSettings,
    owui: LiveOpenWebUI,
    history: History,
    tracking: str | None,
    export: Path,
    stderr: IO[str],
    progress: bool | None,
) -> tuple[Fetch, Downloaded]:
    """The run's export.json: only what changed when it can be, else the whole export."""
    fetch = Fetch("full", why_full=tracking)
    if tracking is None:
        entries = owui.ids_if_supported()
        fetch.skew = owui.skew
        if entries is None:
            fetch.why_full = "this Open WebUI lists no /ids (older than 0.6.42)"
        else:
            fetch.present = present_of(entries)
            fetch.why_full = _why_full(settings, history, fetch.present)
    if fetch.why_full is None:
        fetch.mode = "incremental"
        taken_at = taken_now()
        body = export_body(fetch_changed(owui, fetch, history.seen))
        write_bytes_atomic(export, body)
        digest = _sha256(body)
        write_sidecars(export, digest, taken_at, origin(owui.client.base, False, "incremental"))
        downloaded = Downloaded(export, digest, len(body), len(fetch.times), "bearer", taken_at)
        fetch.bytes_read = owui.bytes_read
        return fetch, downloaded
    started = time.time()
    downloaded = download(
        owui.client, export, user_scope=settings.user_scope, stderr=stderr, progress=progress
    )
    fetch.window = (started, time.time())
    fetch.export_bytes = downloaded.bytes
    fetch.bytes_read = owui.bytes_read + downloaded.bytes
    return fetch, downloaded


def _why_full(settings: SyncSettings, history: History, present: dict[str, int]) -> str | None:
    if settings.full:
        return option("full")
    if not history.usable:
        return "no history of this Open WebUI with these options yet"
    changed = len(new_or_changed(present, history.seen))
    if changed > 1000 and changed > FULL_ABOVE * len(present):
        return f"{changed} of {len(present)} records changed: the export is cheaper"
    return None


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass
class Withdrawals:
    """What the run did about ratings gone from Open WebUI."""

    gone: int = 0
    withdrawn: int = 0
    refused: str | None = None  # the cap's one line
    enabled: bool = True
    recorded: int = 0  # ratings whose outcome went into live_ratings
    unattributed: int = 0  # gone, but never received from this source: never withdrawn

    def as_dict(self) -> dict[str, Any]:
        return {
            "gone": self.gone,
            "unattributed": self.unattributed,
            "withdrawn": self.withdrawn,
            "refused": self.refused,
            "enabled": self.enabled,
            "recorded": self.recorded,
        }


@dataclass(frozen=True)
class Policy:
    """How a run withdraws: --no-withdraw, --max-withdraw, --dry-run, and what to advise."""

    withdraw: bool
    max_withdraw: int
    dry_run: bool
    rerun: str  # "run sync again", ...: said with the cap's refusal


def after_replay(
    settings: SyncSettings,
    owui: LiveOpenWebUI,
    fetch: Fetch,
    history: History,
    feedback: Path,
    completed: bool,
    api_key: Secret | None,
    log: Callable[[str], None],
) -> Withdrawals:
    """Sync: keep the run's outcomes as this source's history; withdraw what is gone."""
    policy = Policy(settings.withdraw, settings.max_withdraw, settings.dry_run, "run sync again")
    if settings.dry_run:
        return keep_and_withdraw(
            settings.replay, settings.openwebui_url, policy, fetch, feedback, completed, api_key,
            log, seen=history.seen,
        )  # fmt: skip
    return keep_and_withdraw(
        settings.replay, settings.openwebui_url, policy, fetch, feedback, completed, api_key,
        log, seen=history.seen if history.usable else None, owui=owui,
        mark=fingerprint(settings.mapping),
    )  # fmt: skip


def keep_and_withdraw(
    replaying: ReplaySettings,
    source: str,
    policy: Policy,
    fetch: Fetch,
    feedback: Path,
    completed: bool,
    api_key: Secret | None,
    log: Callable[[str], None],
    *,
    seen: dict[str, Seen] | None = None,
    owui: LiveOpenWebUI | None = None,
    mark: str | None = None,
) -> Withdrawals:
    """Record the handoff's outcomes under SOURCE, then withdraw what the complete read lacks.
    SEEN: what the state held before the run, if already read (a dry run changes nothing).
    OWUI: confirm an absence from /ids by a 404. MARK: the history fingerprint (sync only)."""
    handoff = HandoffPaths.for_output(feedback)
    out = Withdrawals(enabled=policy.withdraw)
    if policy.dry_run:
        present = _present(fetch, handoff_ids(feedback, handoff.rejects))
        gone = held_and_gone(seen or {}, present, _read_at(fetch))
        _decide(policy, out, gone, log, verb="would withdraw")
        return out
    state = DeliveryState(
        replaying.state_file_or_default(), replaying.base_url, power_safe=replaying.power_safe
    )
    try:
        state.lock()
        live = LiveState(state.path, replaying.base_url, source)
        try:
            recorded = record_history(live, state, feedback, handoff.rejects, fetch, completed)
            out.recorded = len(recorded.ids)
            if not completed:
                return out  # Portkey stopped the run: withdraw on a run that reaches its end
            # what this run recorded is present; withdraw() checks each row again
            present = _present(fetch, recorded.ids)
            gone = held_and_gone(seen or live.all_seen(), present, _read_at(fetch))
            _say_unattributed(out, live, present, log)
            if _decide(policy, out, gone, log, verb="withdrawing"):
                if owui is not None and fetch.mode == "incremental":  # confirm by a 404
                    gone = [g for g in gone if g in fetch.missing or owui.record(g) is None]
                assert api_key is not None
                out.withdrawn = _withdraw(gone, state, live, replaying, api_key, feedback, log)
            if mark is not None:
                live.set_meta(HISTORY, mark)
        finally:
            live.close()
    finally:
        state.close()
    return out


def _withdraw(
    gone: list[str],
    state: DeliveryState,
    live: LiveState,
    replaying: ReplaySettings,
    api_key: Secret,
    feedback: Path,
    log: Callable[[str], None],
) -> int:
    """PUT the withdrawals; list them in WITHDRAWN.jsonl beside the handoff."""
    portkey = PortkeyClient(
        replaying.base_url, api_key, timeout=replaying.timeout,
        verify=replaying.verify_tls, pool_size=replaying.delivery.concurrency,
    )  # fmt: skip
    files = feedback.with_name(_stem(feedback) + ".withdrawals")
    try:
        done = withdraw(gone, state, live, portkey, replaying.delivery, files, log)
    finally:
        portkey.close()
    if done.done:
        _write_jsonl(feedback.with_name(_stem(feedback) + ".withdrawn.jsonl"), done.entries())
    return len(done.done)


def _stem(feedback: Path) -> str:
    name = feedback.name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else name


def _present(fetch: Fetch, handoff: set[str]) -> set[str]:
    """The complete set of ids Open WebUI holds, as this run read it."""
    if fetch.mode == "incremental":
        assert fetch.present is not None
        return set(fetch.present) - set(fetch.missing)
    return handoff  # the whole export


def _say_unattributed(
    out: Withdrawals, live: LiveState, present: set[str], log: Callable[[str], None]
) -> None:
    """Ratings Portkey holds that this complete read lacks, but that the state never received
    from this source: they stay (withdrawal never crosses sources), and the run says so."""
    out.unattributed = sum(1 for key in live.unattributed() if key not in present)
    if out.unattributed:
        others = live.other_sources()
        where = f"; received from {', '.join(others)}" if others else ""
        log(
            f"{out.unattributed} ratings Portkey holds are missing from {live.source} but were "
            "not received from this address as far as the state knows (delivered before "
            f"sources were recorded, or from another address for this server{where}): "
            "they stay in Portkey"
        )


def _read_at(fetch: Fetch) -> float | None:
    """When a whole export was taken (its read began): ratings first seen later are not
    missing from it. None for /ids, whose absences are each confirmed by a 404."""
    return fetch.window[0] if fetch.mode == "full" and fetch.window[0] else None


def _decide(
    policy: Policy, out: Withdrawals, gone: list[str], log: Callable[[str], None], verb: str
) -> bool:
    """Whether to go on and withdraw GONE (said in one line either way)."""
    out.gone = len(gone)
    if not gone:
        return False
    if not policy.withdraw:
        log(f"{len(gone)} ratings gone from Open WebUI; not withdrawn ({option('no_withdraw')})")
        return False
    out.refused = over_cap(len(gone), policy.max_withdraw, policy.rerun)
    if out.refused is not None:
        log("refused: " + out.refused)
        return False
    log(f"{len(gone)} ratings gone from Open WebUI: {verb} them")
    return not policy.dry_run


def _write_jsonl(path: Path, entries: list[dict[str, Any]]) -> None:
    body = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries)
    write_bytes_atomic(path, body.encode("utf-8"))


def refuse_other_source(replaying: ReplaySettings, source: str) -> None:
    """replay --withdraw-missing, before anything is sent: refused (UsageError) when the state
    received this endpoint's ratings from other Open WebUIs only (withdrawal never crosses
    sources; a typo in a URL would otherwise look like a new, empty source)."""
    state_file = replaying.state_file_or_default()
    if not state_file.exists():
        return
    live = LiveState(state_file, replaying.base_url, source)
    try:
        mine, others = live.counts()["tracked"], live.other_sources()
    finally:
        live.close()
    if not mine and others:
        raise UsageError(
            f"this handoff came from {source}, but the delivery state received "
            f"{replaying.base_url}'s ratings from {', '.join(others)}; nothing was sent or "
            "withdrawn (withdrawal never crosses Open WebUIs)"
        )


def withdraw_missing(
    feedback: Path,
    replaying: ReplaySettings,
    source: str,
    policy: Policy,
    completed: bool,
    api_key: Secret | None,
    log: Callable[[str], None],
) -> Withdrawals:
    """replay --withdraw-missing, after the handoff was replayed: SOURCE's ratings the
    complete handoff lacks are withdrawn."""
    state_file = replaying.state_file_or_default()
    seen: dict[str, Seen] = {}
    if policy.dry_run and state_file.exists():
        live = LiveState(state_file, replaying.base_url, source)
        try:
            seen = live.all_seen()
        finally:
            live.close()
    stamp = handoff_taken_at(feedback)  # a rating first seen after it is not missing from it
    taken = stamp / 1000 if stamp is not None else time.time()
    fetch = Fetch("full", window=(taken, taken))
    return keep_and_withdraw(
        replaying, source, policy, fetch, feedback, completed, api_key, log, seen=seen
    )
