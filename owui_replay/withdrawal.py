"""Withdrawing a rating deleted in Open WebUI: shared by listen, sync and replay.

Portkey has no DELETE. A rating is withdrawn by a PUT to the Portkey feedback that holds it,
with the same value, weight 0 (weighted analytics ignore it) and metadata.withdrawn "true";
the delivery state records the new content like any PUT, and live_ratings marks it withdrawn.
Only ratings received from the same Open WebUI (live_ratings.source) are ever withdrawn, and
never more than --max-withdraw at once: a mass disappearance (a wiped or restored database, a
wrong token scope) waits for a person.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.converting import dumps_line
from owui_replay.delivery import Deliverer, DeliveryStats, FailedFile, Send
from owui_replay.delivery_state import DeliveryState, Rating, content_hash, rating_of
from owui_replay.journal import Journal
from owui_replay.live_state import LiveState, Seen
from owui_replay.option_names import option
from owui_replay.portkey_client import PortkeyClient
from owui_replay.settings import DeliveryOptions


def withdrawn_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The same rating, weight 0 (weighted analytics ignore it), marked withdrawn."""
    metadata = dict(payload.get("metadata") or {})
    metadata["withdrawn"] = "true"
    out = {key: value for key, value in payload.items() if key != "metadata"}
    out["weight"] = 0
    out["metadata"] = metadata
    return out


def over_cap(count: int, max_withdraw: int, advice: str) -> str | None:
    """The one line said when COUNT withdrawals exceed the cap (None: within it)."""
    if count <= max_withdraw:
        return None
    return (
        f"{count} ratings disappeared from Open WebUI, more than "
        f"{option('max_withdraw', max_withdraw)}: none withdrawn; if the deletion was meant, "
        f"{advice} with a higher {option('max_withdraw')} (or {option('no_withdraw')} to keep "
        "them)"
    )


def held_and_gone(
    seen: dict[str, Seen], present: set[str], taken_at: float | None = None
) -> list[str]:
    """Ratings Portkey holds from this source that the complete list PRESENT lacks. TAKEN_AT
    (epoch seconds): when PRESENT was read; a rating first seen after that was created after
    it, so its absence from an older export proves nothing."""
    return sorted(
        key
        for key, s in seen.items()
        if key not in present
        and s.held
        and (taken_at is None or s.seen_since is None or s.seen_since <= taken_at)
    )


@dataclass(frozen=True)
class Withdrawal:
    """The PUT that withdraws one rating."""

    subject: str
    payload: dict[str, Any]
    rating: Rating
    put_id: str


def plan_withdrawal(
    subject: str, seen: Seen, state: DeliveryState, live: LiveState, log: Callable[[str], None]
) -> Withdrawal | None:
    """The PUT for a rating Portkey holds from us (SEEN.held, with its payload), or None when
    there is nothing to send: already withdrawn (marked now), or Portkey never said which
    feedback holds it (said once, then forgotten)."""
    assert seen.payload is not None
    original = rating_of(seen.payload, dumps_line(seen.payload))
    known = state.lookup(original.key)
    if known is None or not known.portkey_id:
        if known is not None and (known.unknown or known.portkey_id == ""):
            copies = known.unknown or 1
            log(
                f"{subject}: deleted in Open WebUI, but cannot be withdrawn: Portkey never said "
                f"which feedback holds it, so Portkey may hold up to {copies} extra copies of it"
            )
        live.forget_payload(subject)
        return None
    payload = withdrawn_payload(seen.payload)
    rating = Rating(
        original.key, original.updated_at, content_hash(payload), original.trace_id,
        known.taken_at, options=known.options,
    )  # fmt: skip  # the same version, made by the same options: only its weight changed
    if known.content == rating.content:  # withdrawn before a crash, not yet marked
        live.mark_withdrawn(subject)
        return None
    return Withdrawal(subject, payload, rating, known.portkey_id)


@dataclass
class Withdrawn:
    """What a batch withdrawal did: the PUTs Portkey acknowledged, and its delivery stats."""

    done: list[tuple[Withdrawal, str]] = field(default_factory=list)  # with the Portkey id
    stats: DeliveryStats | None = None

    def entries(self) -> list[dict[str, Any]]:
        """For the run's withdrawn.jsonl audit file."""
        return [
            {"feedback_id": w.subject, "portkey_id": pid, "payload": w.payload}
            for w, pid in self.done
        ]


def withdraw(
    subjects: list[str],
    state: DeliveryState,
    live: LiveState,
    portkey: PortkeyClient,
    options: DeliveryOptions,
    files: Path,
    log: Callable[[str], None],
) -> Withdrawn:
    """Withdraw SUBJECTS (already checked against the cap) in one delivery run, journalled in
    FILES.journal.jsonl (refusals in FILES.failed.jsonl), as replay journals a handoff."""
    plans = []
    for subject in subjects:
        seen = live.seen(subject)
        if seen is None or seen.source != live.source or not seen.held:
            continue  # never received from this Open WebUI, or already withdrawn
        planned = plan_withdrawal(subject, seen, state, live, log)
        if planned is not None:
            plans.append(planned)
    result = Withdrawn()
    if not plans:
        return result
    sends = [
        (Send(n, w.rating, put_id=w.put_id), dumps_line(w.payload)) for n, w in enumerate(plans)
    ]
    digest = hashlib.sha256(b"".join(raw for _, raw in sends)).hexdigest()
    journal = Journal(
        files.with_name(files.name + ".journal.jsonl"),
        input_name="withdrawals",
        input_sha256=digest,
        lines=len(sends),
    )
    journal.start_run({"endpoint": state.endpoint, "source": live.source, "withdraw": len(plans)})
    failed = FailedFile(files.with_name(files.name + ".failed.jsonl"))
    try:
        result.stats = Deliverer(portkey, state, journal, failed, options).run(iter(sends))
    finally:
        failed.close()
        stop = result.stats.stop_reason if result.stats else None
        journal.end(stop.value if stop else "complete")
        journal.close()
    for planned in plans:
        known = state.lookup(planned.rating.key)
        if known is not None and known.portkey_id and known.content == planned.rating.content:
            live.mark_withdrawn(planned.subject)
            result.done.append((planned, known.portkey_id))
            log(f"{planned.subject}: withdrawn (PUT {known.portkey_id}, weight 0)")
    return result
