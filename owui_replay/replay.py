"""The replay job: check the handoff, plan from the journal, deliver, summarise."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from owui_replay.delivery import Deliverer, DeliveryOptions, DeliveryStats, FailedFile
from owui_replay.errors import ExitCode, UsageError
from owui_replay.feedback_file import FeedbackFile, check_manifest, iter_lines, scan_feedback
from owui_replay.handoff import HandoffPaths
from owui_replay.journal import Journal, JournalState, read_journal
from owui_replay.ledger import Ledger
from owui_replay.portkey_client import PortkeyClient
from owui_replay.progress import is_terminal
from owui_replay.secrets import Secret


@dataclass(frozen=True)
class Identity:
    """What the ledger needs of a line: whose rating, which version, what value."""

    feedback_id: str
    updated_at: int
    value: int
    trace_id: str


def line_identity(raw: bytes) -> Identity | None:
    payload = json.loads(raw)
    metadata = payload.get("metadata") or {}
    feedback_id, updated_at = metadata.get("feedback_id"), metadata.get("updated_at")
    if not feedback_id or not str(updated_at or "").isdigit():
        return None  # not from convert (or trimmed with --drop-metadata): no ledger logic
    return Identity(feedback_id, int(updated_at), payload["value"], payload["trace_id"])


@dataclass
class LedgerPlan:
    """The ledger's say on the lines a run would send."""

    put_ids: dict[int, str] = field(default_factory=dict)
    identities: dict[int, Identity] = field(default_factory=dict)
    unchanged: int = 0
    stale: int = 0
    changed_without_id: int = 0  # changed, but Portkey never told us which feedback to update


def apply_ledger(feedback: Path, plan: Plan, state: JournalState, ledger: Ledger) -> LedgerPlan:
    """Rebuild the ledger from this file's journal acks, then drop lines Portkey already has
    and turn changed ratings into updates. One pass over the file."""
    result = LedgerPlan()
    sending = set(plan.send)
    wanted = sending | set(state.acked)
    keep: list[int] = []
    for number, raw in iter_lines(feedback, wanted):
        identity = line_identity(raw)
        if identity is None:
            if number in sending:
                keep.append(number)
            continue
        if number in state.acked:
            ledger.record(identity.feedback_id, state.acked[number] or "",
                          identity.updated_at, identity.value, identity.trace_id)  # fmt: skip
        if number not in sending:
            continue
        known = ledger.lookup(identity.feedback_id)
        if known is None:
            keep.append(number)
        elif known.updated_at < identity.updated_at and not known.portkey_id:
            result.changed_without_id += 1  # posting again would duplicate it
            continue
        elif known.updated_at < identity.updated_at:
            result.put_ids[number] = known.portkey_id
            keep.append(number)
        elif known.updated_at == identity.updated_at:
            result.unchanged += 1
            continue
        else:
            result.stale += 1
            continue
        result.identities[number] = identity
    plan.send = keep
    plan.uncertain &= set(keep)
    plan.ledger_skipped = result.unchanged + result.stale + result.changed_without_id
    return result


@dataclass(frozen=True)
class ReplaySettings:
    base_url: str
    delivery: DeliveryOptions = field(default_factory=DeliveryOptions)
    timeout: float = 30.0
    verify_tls: bool | str = True
    verify_manifest: bool = True
    restart: bool = False
    start_offset: int = 0
    uncertain: str = "resend"  # or "skip"
    ledger: Path | None = None  # None: no ledger


@dataclass
class Plan:
    """Which lines this run sends, and why the others are not sent."""

    total: int
    send: list[int]
    below_offset: int
    already_acked: int
    previously_failed: int
    uncertain: set[int]
    uncertain_skipped: int
    ledger_skipped: int = 0  # Portkey already has them (unchanged, stale or not updatable)

    @property
    def done_before(self) -> int:
        return self.below_offset + self.already_acked + self.previously_failed + self.ledger_skipped

    def resume_note(self, paths: HandoffPaths) -> str:
        """Said before sending, so even a run that is killed has reported what it resends."""
        note = (
            f"resuming from {paths.journal.name}: {self.already_acked} acknowledged earlier, "
            f"{len(self.send)} to send, uncertain resent: {len(self.uncertain)}"
        )
        if self.uncertain_skipped:
            note += f", uncertain skipped: {self.uncertain_skipped}"
        if self.uncertain or self.uncertain_skipped:
            note += " (in flight when an earlier run stopped: Portkey may already have them)"
        return note


def make_plan(lines: int, state: JournalState, start_offset: int, uncertain_mode: str) -> Plan:
    uncertain = state.uncertain
    send, below, acked, failed, skipped = [], 0, 0, 0, 0
    for number in range(lines):
        if number < start_offset:
            below += 1
        elif number in state.acked:
            acked += 1
        elif number in state.failed:
            failed += 1
        elif number in uncertain and uncertain_mode == "skip":
            skipped += 1
        else:
            send.append(number)
    return Plan(lines, send, below, acked, failed, uncertain & set(send), skipped)


@dataclass
class ReplayResult:
    plan: Plan
    stats: DeliveryStats | None
    paths: HandoffPaths
    ledger: LedgerPlan | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.stats is None:
            return ExitCode.OK
        reason = self.stats.stop_reason
        if reason == "interrupted":
            return ExitCode.INTERRUPTED
        if reason == "auth":
            return ExitCode.AUTH
        if reason or self.stats.failed or self.plan.uncertain_skipped:
            return ExitCode.DELIVERY_FAILED
        return ExitCode.OK

    def summary(self) -> str:
        plan, stats = self.plan, self.stats
        parts = [f"{plan.total} lines"]
        if stats is not None:
            parts.append(f"{stats.acked} acknowledged now")
        else:
            parts.append(f"{len(plan.send)} to send")
        if plan.already_acked:
            parts.append(f"{plan.already_acked} acknowledged earlier")
        if plan.below_offset:
            parts.append(f"{plan.below_offset} before --start-offset")
        if self.ledger is not None:
            parts.append(f"updates (PUT): {len(self.ledger.put_ids)}")
            parts.append(f"unchanged since an earlier export: {self.ledger.unchanged}")
            if self.ledger.stale:
                parts.append(f"older than what Portkey has: {self.ledger.stale}")
            if self.ledger.changed_without_id:
                parts.append(
                    f"changed but not updatable (Portkey returned no feedback id): "
                    f"{self.ledger.changed_without_id}"
                )
        failed = plan.previously_failed + (stats.failed if stats else 0)
        if failed:
            parts.append(f"{failed} refused (see {self.paths.failed.name})")
        parts.append(f"uncertain resent: {len(plan.uncertain)}")
        if plan.uncertain_skipped:
            parts.append(f"uncertain skipped: {plan.uncertain_skipped}")
        if stats is not None:
            parts.append(f"possible duplicates from retries: {len(stats.possible_duplicates)}")
            parts.append(f"retries: {stats.retried}")
            if stats.throttled:
                parts.append(f"throttled (429): {stats.throttled}")
            not_sent = len(plan.send) - stats.acked - stats.failed
            if stats.stop_reason and not_sent > 0:
                parts.append(f"{not_sent} not acknowledged yet (run again to resume)")
        return ", ".join(parts)


def prepare(
    feedback: Path, settings: ReplaySettings, *, dry_run: bool, warnings: list[str]
) -> tuple[
    FeedbackFile, HandoffPaths, JournalState
]:  # fmt: skip
    """Check the file and its manifest, and read what earlier runs did."""
    if settings.start_offset < 0:
        raise UsageError("--start-offset must be 0 or more")
    scanned = scan_feedback(feedback)
    manifest = check_manifest(scanned) if settings.verify_manifest else None
    if settings.verify_manifest and manifest is None:
        warnings.append(
            f"no {HandoffPaths.for_output(feedback).manifest.name} beside {feedback.name}: "
            "sending without checking it against convert's hashes"
        )
    paths = HandoffPaths.for_output(feedback)
    if settings.start_offset > scanned.lines:
        raise UsageError(
            f"--start-offset {settings.start_offset} is past the end ({scanned.lines} lines)"
        )
    state = JournalState()
    if paths.journal.exists() and not settings.restart:
        state = read_journal(paths.journal, scanned.sha256)
    elif paths.journal.exists() and settings.restart and not dry_run:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        os.replace(paths.journal, paths.journal.with_name(f"{paths.journal.name}.{stamp}"))
    return scanned, paths, state


def replay(
    feedback: Path,
    settings: ReplaySettings,
    api_key: Secret,
    *,
    stderr: IO[str],
    progress: bool | None = None,
) -> ReplayResult:
    warnings: list[str] = []
    scanned, paths, state = prepare(feedback, settings, dry_run=False, warnings=warnings)
    for warning in warnings:
        stderr.write(f"owui-replay: warning: {warning}\n")
    plan = make_plan(scanned.lines, state, settings.start_offset, settings.uncertain)
    ledger = Ledger(settings.ledger, settings.base_url) if settings.ledger else None
    ledger_plan = apply_ledger(feedback, plan, state, ledger) if ledger else None
    if state.runs:
        stderr.write(f"owui-replay: {plan.resume_note(paths)}\n")
        stderr.flush()
    journal = Journal(
        paths.journal, input_name=feedback.name, input_sha256=scanned.sha256, lines=scanned.lines
    )
    journal.start_run(_journal_options(settings))
    client = PortkeyClient(
        settings.base_url,
        api_key,
        timeout=settings.timeout,
        verify=settings.verify_tls,
        pool_size=settings.delivery.concurrency,
    )
    failed = FailedFile(paths.failed)
    bar = _bar(plan, stderr, progress)

    def remember(line: int, portkey_id: str | None) -> None:
        identity = ledger_plan.identities.get(line) if ledger_plan else None
        if ledger is not None and identity is not None:
            ledger.record(identity.feedback_id, portkey_id or "", identity.updated_at,
                          identity.value, identity.trace_id)  # fmt: skip

    deliverer = Deliverer(
        client,
        journal,
        failed,
        settings.delivery,
        on_progress=lambda s: _update(bar, plan, s),
        on_ack=remember,
        put_ids=ledger_plan.put_ids if ledger_plan else None,
    )
    stats: DeliveryStats | None = None
    try:
        stats = deliverer.run(iter_lines(feedback, set(plan.send)))
    finally:
        bar.close()
        failed.close()
        journal.end((stats.stop_reason if stats else None) or "complete")
        journal.close()
        client.close()
        if ledger is not None:
            ledger.close()
    return ReplayResult(plan, stats, paths, ledger_plan)


def dry_run(
    feedback: Path, settings: ReplaySettings, samples: int, stdout: IO[str]
) -> ReplayResult:
    scanned, paths, state = prepare(feedback, settings, dry_run=True, warnings=[])
    plan = make_plan(scanned.lines, state, settings.start_offset, settings.uncertain)
    ledger_plan = None
    if settings.ledger is not None and settings.ledger.exists():
        ledger = Ledger(settings.ledger, settings.base_url)
        try:
            ledger_plan = apply_ledger(feedback, plan, state, ledger)
        finally:
            ledger.close()
    for _number, raw in iter_lines(feedback, set(plan.send[:samples])):
        stdout.write(json.dumps(json.loads(raw), ensure_ascii=False, indent=2) + "\n")
    return ReplayResult(plan, None, paths, ledger_plan)


def _journal_options(settings: ReplaySettings) -> dict[str, Any]:
    d = settings.delivery
    return {
        "base_url": settings.base_url,
        "concurrency": d.concurrency,
        "rate": d.rate,
        "batch_size": d.batch_size,
        "retries": d.retries,
        "start_offset": settings.start_offset,
        "uncertain": settings.uncertain,
    }


def _bar(plan: Plan, stderr: IO[str], enabled: bool | None) -> Any:
    from tqdm import tqdm

    show = is_terminal(stderr) if enabled is None else enabled
    return tqdm(
        total=plan.total,
        initial=plan.done_before,
        desc="replay",
        unit="line",
        file=stderr,
        disable=not show,
        dynamic_ncols=True,
    )


def _update(bar: Any, plan: Plan, stats: DeliveryStats) -> None:
    done = plan.done_before + stats.acked + stats.failed
    if done != bar.n:
        bar.update(done - bar.n)
    bar.set_postfix(ok=stats.acked, retried=stats.retried, failed=stats.failed, refresh=False)
