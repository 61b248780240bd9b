"""The replay job: check the handoff, plan against the delivery state, deliver, summarise."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from owui_replay.approvals import require_approvals
from owui_replay.atomic import missing_folders, remove_empty
from owui_replay.delivery import (
    CONFIGURATION,
    Deliverer,
    DeliveryStats,
    FailedFile,
    Send,
    stop_outcome,
)
from owui_replay.delivery_state import (
    DeliveryState,
    Known,
    LineState,
    Rating,
    judge,
    rating_of,
)
from owui_replay.errors import ExitCode, ReplayError, StateError, UsageError
from owui_replay.evidence import (
    acked_lines,
    journals_beside,
    recorded_deliveries,
    same_server,
)
from owui_replay.feedback_file import FeedbackFile, check_manifest, iter_lines, scan_feedback
from owui_replay.handoff import HandoffPaths
from owui_replay.journal import Journal, set_aside
from owui_replay.option_change import OptionChangeRefused, OptionSet, describe, differences
from owui_replay.option_change import from_manifest as options_from_manifest
from owui_replay.option_names import command_option, option
from owui_replay.portkey_client import PortkeyClient
from owui_replay.progress import is_terminal
from owui_replay.secrets import Secret, portkey_key
from owui_replay.settings import ReplaySettings
from owui_replay.words import plural


@dataclass
class Plan:
    """What this run sends to its endpoint, and why every other line is not sent."""

    endpoint: str
    total: int
    sends: list[Send] = field(default_factory=list)
    states: Counter[LineState] = field(default_factory=Counter)
    below_offset: int = 0
    superseded: int = 0  # the same rating on two lines of the file: only the newest is sent
    new_lines: list[int] = field(default_factory=list)  # never sent, as the state knows
    uncertain_resent: int = 0
    uncertain_skipped: int = 0
    maybe_copies: int = 0  # unanswered POSTs behind the uncertain ratings resent
    approved_by: list[str] = field(default_factory=list)  # principals whose approval verified
    option_set: OptionSet | None = None  # the options that made this handoff, if known
    option_changes: list[str] = field(default_factory=list)  # "name old -> new", per option
    guarded: bool = False  # a real run refuses option-only changes (sync)

    @property
    def changed_in_openwebui(self) -> int:
        return self.states[LineState.CHANGED]

    @property
    def options_only(self) -> int:
        """Delivered ratings that change only because the mapping options differ."""
        return self.states[LineState.OPTIONS]

    def option_note(self) -> str:
        """Said before sending: the option-only changes, named."""
        return (
            f"{plural(self.options_only, 'delivered rating')} "
            f"{'changes' if self.options_only == 1 else 'change'} only because of options "
            f"(not in Open WebUI): {describe(self.option_changes)}"
        )

    @property
    def posts(self) -> int:
        return sum(1 for s in self.sends if s.put_id is None)

    @property
    def puts(self) -> int:
        return len(self.sends) - self.posts

    @property
    def done_before(self) -> int:
        return self.total - len(self.sends)

    @property
    def backwards(self) -> int:
        return self.states[LineState.BACKWARDS]

    def announcement(self) -> str | None:
        """Said before anything is sent, so even a run that is later killed has said it."""
        if not (self.uncertain_resent or self.uncertain_skipped):
            return None
        if self.uncertain_skipped:
            return (
                f"{self.endpoint}: uncertain skipped: {self.uncertain_skipped} ratings whose "
                "earlier POST got no answer (Portkey may or may not hold them; "
                f"{option('uncertain', 'resend')} sends them)"
            )
        return (
            f"{self.endpoint}: uncertain resent: {self.uncertain_resent} ratings whose earlier "
            f"POST got no answer (a killed run or a timeout): Portkey may already hold them, so "
            f"it may end with up to {self.maybe_copies} extra copies"
        )


def plan_lines(
    feedback: Path,
    settings: ReplaySettings,
    state: DeliveryState,
    taken_at: int | None = None,
    options: OptionSet | None = None,
) -> tuple[FeedbackFile, Plan]:
    """Check every line (schema, manifest) and judge it against the endpoint's state.
    TAKEN_AT: when the handoff's export was taken (ms), from its manifest, if known; OPTIONS:
    the mapping options that made it, from its manifest, if known."""
    newest: dict[str, tuple[int, Rating]] = {}
    plan = Plan(state.endpoint, 0, option_set=options)
    digest = options.digest if options is not None else None

    def visit(number: int, payload: Any, raw: bytes) -> None:
        if number < settings.start_offset:
            plan.below_offset += 1
            return
        rating = rating_of(payload, raw, taken_at, digest)
        earlier = newest.get(rating.key)
        if earlier is not None:
            plan.superseded += 1
            if earlier[1].updated_at > rating.updated_at:
                return
        newest[rating.key] = (number, rating)

    scanned = scan_feedback(feedback, visit)
    if settings.start_offset > scanned.lines:
        raise UsageError(
            f"{option('start_offset', settings.start_offset)} is past the end "
            f"({scanned.lines} lines)"
        )
    plan.total = scanned.lines
    earlier_options: set[str] = set()
    for number, rating in sorted(newest.values(), key=lambda item: item[0]):
        known = state.lookup(rating.key)
        verdict = judge(
            rating, known, retry_refused=settings.retry_refused, send_older=settings.send_older
        )
        plan.states[verdict] += 1
        if verdict is LineState.OPTIONS:
            assert known is not None
            earlier_options.add(known.options or "")  # "": delivered with options unrecorded
        _schedule(plan, number, rating, verdict, known, settings)
    if options is not None:
        for old in sorted(earlier_options):
            plan.option_changes += differences(state.option_set(old), options.options)
    return scanned, plan


def _schedule(
    plan: Plan,
    number: int,
    rating: Rating,
    verdict: LineState,
    known: Known | None,
    settings: ReplaySettings,
) -> None:
    """Add line NUMBER to PLAN's sends as its VERDICT says (a PUT where Portkey holds it)."""
    if verdict is LineState.NEW:
        plan.new_lines.append(number)
        plan.sends.append(Send(number, rating))
    elif verdict is LineState.OPTIONS:
        assert known is not None
        plan.sends.append(Send(number, rating, put_id=known.portkey_id))
    elif verdict is LineState.CHANGED:
        assert known is not None
        if settings.send_older and rating.updated_at < (known.updated_at or 0):
            rating = replace(rating, send_older=True)  # recorded although it went back
        plan.sends.append(Send(number, rating, put_id=known.portkey_id))
    elif verdict is LineState.UNCERTAIN and settings.uncertain == "skip":
        plan.uncertain_skipped += 1
    elif verdict is LineState.UNCERTAIN:
        assert known is not None
        plan.uncertain_resent += 1
        plan.maybe_copies += known.unknown
        plan.sends.append(Send(number, rating))


@dataclass
class ReplayResult:
    """What a replay (or a dry run) planned and did, with its exit code and summary."""

    plan: Plan
    stats: DeliveryStats | None  # None: a dry run
    paths: HandoffPaths
    warnings: list[str] = field(default_factory=list)  # what was said before sending
    state_file: Path = Path()

    @property
    def exit_code(self) -> ExitCode:
        stats = self.stats
        if stats is None:
            return ExitCode.OK
        if stats.stop_reason is not None:
            return stop_outcome(stats.stop_reason, stats.stop_detail, self.plan.endpoint)[0]
        if stats.refused or self.plan.uncertain_skipped or self.plan.backwards:
            return ExitCode.DELIVERY_FAILED
        return ExitCode.OK

    def stop_message(self) -> str | None:
        stats = self.stats
        if stats is None or stats.stop_reason is None:
            return None
        return stop_outcome(stats.stop_reason, stats.stop_detail, self.plan.endpoint)[1]

    @property
    def not_delivered(self) -> int:
        """Lines this run meant to send that have no outcome yet (run again to resume)."""
        if self.stats is None:
            return 0
        return len(self.plan.sends) - self.stats.acked - self.stats.refused

    def as_dict(self) -> dict[str, Any]:
        """The --json result (fields documented in README.md)."""
        plan, stats = self.plan, self.stats
        doc: dict[str, Any] = {
            "command": "replay",
            "dry_run": stats is None,
            "exit_code": int(self.exit_code),
            "stop_reason": stats.stop_reason.value if stats and stats.stop_reason else None,
            "endpoint": plan.endpoint,
            "feedback": str(self.paths.output),
            "state": str(self.state_file),
            "journal": str(self.paths.journal),
            "failed_file": str(self.paths.failed),
            "lines": plan.total,
            "to_post": plan.posts,
            "to_put": plan.puts,
            "by_state": {state.value: n for state, n in sorted(plan.states.items(), key=str)},
            "before_start_offset": plan.below_offset,
            "older_copies_in_file": plan.superseded,
            "uncertain_resent": plan.uncertain_resent,
            "uncertain_skipped": plan.uncertain_skipped,
            "older_not_sent": plan.backwards,
            "changed_in_openwebui": plan.changed_in_openwebui,
            "changed_only_by_options": plan.options_only,
            "option_changes": list(dict.fromkeys(plan.option_changes)),
            "approved_by": plan.approved_by,
        }
        if stats is not None:
            doc.update(
                posted=stats.posted,
                updated=stats.updated,
                refused=stats.refused,
                extra_copies=stats.extra_copies,
                retries=stats.retried,
                throttled=stats.throttled,
                not_delivered=self.not_delivered,
            )
        return doc

    def summary(self) -> str:
        plan, stats, states = self.plan, self.stats, self.plan.states
        parts = [plural(plan.total, "line")]
        if stats is None:
            parts.append(f"would POST {plan.posts}, PUT {plan.puts}")
        else:
            parts.append(f"delivered now: {stats.posted} posted, {stats.updated} updated")
        parts.append(f"already delivered: {states[LineState.DELIVERED]}")
        if plan.options_only:  # the PUTs split by cause (with none, every PUT is a change there)
            parts.append(f"changed in Open WebUI: {plan.changed_in_openwebui}")
            verb = "would change" if stats is None else "changed"
            refuses = "; a real run refuses them" if plan.guarded and stats is None else ""
            parts.append(
                f"{verb} only because of options: {plan.options_only} "
                f"({describe(plan.option_changes)}{refuses})"
            )
        parts += [text for count, text in self._plan_parts() if count]
        parts.append(f"uncertain resent: {plan.uncertain_resent}")
        if plan.uncertain_skipped:
            parts.append(f"uncertain skipped: {plan.uncertain_skipped}")
        if stats is not None:
            parts += self._delivery_parts(stats)
        if plan.approved_by:
            parts.append(f"approved by: {', '.join(plan.approved_by)}")
        return f"{plan.endpoint}: " + ", ".join(parts)

    def _plan_parts(self) -> list[tuple[int, str]]:
        """The plan's counts that are said only when not zero, each with its words."""
        plan, states = self.plan, self.plan.states
        refused_now = self.stats.refused if self.stats is not None else 0
        return [
            (states[LineState.STALE], f"older than what Portkey has: {states[LineState.STALE]}"),
            (
                plan.backwards,
                f"changed to an older updated_at, not sent: {plan.backwards} (no export time "
                f"says which export is newer; {option('send_older')} sends them)",
            ),
            (
                states[LineState.NOT_UPDATABLE],
                "changed but not updatable (Portkey returned no feedback id): "
                f"{states[LineState.NOT_UPDATABLE]}",
            ),
            (refused_now, f"refused: {refused_now} (see {self.paths.failed.name})"),
            (
                states[LineState.REFUSED],
                f"refused earlier: {states[LineState.REFUSED]} "
                f"({option('retry_refused')} sends them again)",
            ),
            (plan.below_offset, f"before {option('start_offset')}: {plan.below_offset}"),
            (plan.superseded, f"older copies of a rating in this file: {plan.superseded}"),
        ]

    def _delivery_parts(self, stats: DeliveryStats) -> list[str]:
        parts = [
            f"extra copies Portkey may hold: {stats.extra_copies}",
            f"retries: {stats.retried}",
        ]
        if stats.throttled:
            parts.append(f"throttled (429): {stats.throttled}")
        if stats.stop_reason is not None and self.not_delivered > 0:
            # running again helps after an interruption or a give-up, not after a wrong setting
            again = "" if stats.stop_reason in CONFIGURATION else " (run again to resume)"
            parts.append(f"not delivered yet: {self.not_delivered}{again}")
        return parts


def _checked(
    feedback: Path, settings: ReplaySettings, state: DeliveryState, warnings: list[str]
) -> tuple[FeedbackFile, Plan]:
    """Every check that comes before sending: lines, manifest, approvals; then the plan."""
    if settings.start_offset < 0:
        raise UsageError(f"{option('start_offset')} must be 0 or more")
    if settings.allowed_signers is not None and not settings.verify_manifest:
        raise UsageError(
            f"{option('allowed_signers')} checks the manifest's signatures: drop "
            f"{option('no_verify')}"
        )
    if not settings.new_state:
        refuse_silent_fresh_start(feedback, settings, state)
    taken_at = handoff_taken_at(feedback) if settings.verify_manifest else None
    options = handoff_options(feedback) if settings.verify_manifest else None
    scanned, plan = plan_lines(feedback, settings, state, taken_at, options)
    plan.guarded = settings.guard_option_change
    if not settings.new_state and plan.new_lines:
        refuse_a_state_behind_its_journal(feedback, scanned.sha256, plan, state)
    manifest = check_manifest(scanned) if settings.verify_manifest else None
    if settings.allowed_signers is not None:
        plan.approved_by = require_approvals(
            HandoffPaths.for_output(feedback).manifest,
            settings.allowed_signers,
            settings.min_approvals,
        )
    elif settings.verify_manifest and manifest is None:
        warnings.append(
            f"no {HandoffPaths.for_output(feedback).manifest.name} beside {feedback.name}: "
            "sending without checking it against convert's hashes"
        )
    return scanned, plan


class UnknownDeliveries(ReplayError):
    """The state has no record of an endpoint that other evidence shows deliveries to."""

    code = ExitCode.NO_STATE


def refuse_silent_fresh_start(
    feedback: Path, settings: ReplaySettings, state: DeliveryState
) -> None:
    """Before anything is sent: a state with no record of the endpoint is a fresh start only
    when nothing says otherwise (see evidence.py); else one line names the evidence."""
    if state.knows_endpoint():
        return
    journals = journals_beside(feedback) + list(settings.evidence_journals)
    found = recorded_deliveries(journals, state.endpoint)
    if found is not None:
        used = f" (their state: {found.state})" if found.state else ""
        raise UnknownDeliveries(
            f"{found.journal} records {found.acks} deliveries to {state.endpoint}{used}, but "
            f"the delivery state {state.path} has no record of that endpoint; nothing was "
            f"sent. Point {option('state_file')} at the state those runs used, or pass "
            f"{option('new_state')} to send everything again"
        )
    for other in state.endpoints():
        address = same_server(other, state.endpoint)
        if address is not None:
            raise UnknownDeliveries(
                f"{state.endpoint} reaches the same server ({address}) as {other}, which the "
                f"delivery state {state.path} holds deliveries to; nothing was sent. Use "
                f"{option('portkey_url', other)}, or pass {option('new_state')} to treat it as "
                "another endpoint"
            )


def refuse_a_state_behind_its_journal(
    feedback: Path, sha256: str, plan: Plan, state: DeliveryState
) -> None:
    """The journal says the endpoint acknowledged lines the state calls new: the state is
    behind (a `cp` without its WAL after a kill, an old backup). Say so; send nothing."""
    behind, journal = acked_lines(
        journals_beside(feedback), state.endpoint, sha256, state.forgotten_at(),
        set(plan.new_lines),
    )  # fmt: skip
    if behind:
        raise UnknownDeliveries(
            f"{journal} records that {state.endpoint} acknowledged {plural(len(behind), 'line')} "
            f"the delivery state {state.path} has no record of (a copy made without its WAL "
            "after a kill, or an older backup?); nothing was sent. Use the state those runs "
            f"used (copy one with {command_option('state', 'backup')}), or pass "
            f"{option('new_state')} to send them again"
        )


def handoff_options(feedback: Path) -> OptionSet | None:
    """The mapping options convert recorded in the handoff's manifest; None when unknown (no
    manifest, or one from a version that recorded other options)."""
    manifest = HandoffPaths.for_output(feedback).manifest
    try:
        return options_from_manifest(json.loads(manifest.read_text("utf-8")))
    except (OSError, ValueError):
        return None


def handoff_taken_at(feedback: Path) -> int | None:
    """When the export behind this handoff was taken (ms since the epoch), from the manifest
    convert wrote (input.taken_at, carried from download); None when unknown."""
    manifest = HandoffPaths.for_output(feedback).manifest
    try:
        text = json.loads(manifest.read_text("utf-8"))["input"]["taken_at"]
        stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no manifest, or none with an export time: check_manifest says more
    if stamp.tzinfo is None:
        return None
    return int(stamp.timestamp() * 1000)


def replay(
    feedback: str | Path,
    settings: ReplaySettings | None = None,
    api_key: Secret | str | None = None,
    *,
    stderr: IO[str] | None = None,
    progress: bool | None = False,
) -> ReplayResult:
    """Send what the endpoint does not hold yet. api_key None reads $PORTKEY_API_KEY; stderr
    None prints nothing (the warnings are in the result); progress None: a bar on a terminal."""
    feedback = Path(feedback)
    settings = settings or ReplaySettings.from_environment()
    if not isinstance(api_key, Secret):
        api_key = Secret(api_key, "argument") if api_key else portkey_key()
    paths = HandoffPaths.for_output(feedback)
    new_folders = missing_folders(settings.state_file_or_default().parent)
    new_file = not settings.state_file_or_default().exists()
    state = DeliveryState(
        settings.state_file_or_default(), settings.base_url, power_safe=settings.power_safe
    )
    try:
        state.lock()
        warnings: list[str] = []
        scanned, plan = _checked(feedback, settings, state, warnings)
        if settings.guard_option_change and plan.options_only:
            raise OptionChangeRefused(state.endpoint, plan.options_only, plan.option_changes)
        said = _say_before_sending(plan, warnings, stderr)
        state.touch_endpoint()
        if plan.option_set is not None:
            state.note_options(plan.option_set.digest, plan.option_set.text)
        if settings.restart and paths.journal.exists():
            set_aside(paths.journal)
        stats = _deliver(feedback, scanned, plan, paths, settings, state, api_key, stderr, progress)
    except UnknownDeliveries:
        state.close()
        if new_file:  # made only to refuse (a typo in --state-file): leave nothing behind
            _remove_state(settings.state_file_or_default(), new_folders)
        raise
    finally:
        state.close()
    return ReplayResult(plan, stats, paths, said, settings.state_file_or_default())


def _say_before_sending(plan: Plan, warnings: list[str], stderr: IO[str] | None) -> list[str]:
    """The warnings and the plan's announcement, written to STDERR (if any) before anything
    is sent, and kept for the result."""
    if plan.options_only:
        warnings.append(plan.option_note())
    announcement = plan.announcement()
    said = [f"warning: {w}" for w in warnings] + ([announcement] if announcement else [])
    if stderr is not None:
        for text in said:
            stderr.write(f"owui-replay: {text}\n")
        stderr.flush()
    return said


def _remove_state(path: Path, new_folders: list[Path]) -> None:
    """Remove a state file (and its WAL) this run made, and the folders it made for it."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    remove_empty(new_folders)


def _deliver(
    feedback: Path,
    scanned: FeedbackFile,
    plan: Plan,
    paths: HandoffPaths,
    settings: ReplaySettings,
    state: DeliveryState,
    api_key: Secret,
    stderr: IO[str] | None,
    progress: bool | None,
) -> DeliveryStats:
    journal = Journal(
        paths.journal, input_name=feedback.name, input_sha256=scanned.sha256, lines=scanned.lines
    )
    journal.start_run({**_journal_options(settings), "approved_by": plan.approved_by})
    client = PortkeyClient(
        settings.base_url,
        api_key,
        timeout=settings.timeout,
        verify=settings.verify_tls,
        pool_size=settings.delivery.concurrency,
    )
    failed = FailedFile(paths.failed)
    bar = _bar(plan, stderr, progress)
    deliverer = Deliverer(
        client,
        state,
        journal,
        failed,
        settings.delivery,
        on_progress=lambda s: _update(bar, plan, s),
        approved_by=",".join(plan.approved_by),
    )
    sends = {send.line: send for send in plan.sends}
    stats: DeliveryStats | None = None
    failure: StateError | None = None  # a worker's, or the journal's at the end
    try:
        lines = ((sends[n], raw) for n, raw in iter_lines(feedback, sends.keys()))
        stats = deliverer.run(lines)
        failure = state.failure or journal.failure
    finally:
        bar.close()
        failed.close()
        reason = stats.stop_reason.value if stats and stats.stop_reason else "complete"
        try:
            journal.end(reason if stats else "error")
        except StateError as exc:
            failure = failure or exc
        finally:
            with contextlib.suppress(StateError):
                journal.close()
        client.close()
    if failure is not None:
        raise failure
    return stats


def dry_run(
    feedback: str | Path,
    settings: ReplaySettings | None = None,
    samples: int = 0,
    stdout: IO[str] | None = None,
) -> ReplayResult:
    """What replay would do, sending nothing (no key needed); SAMPLES payloads to stdout."""
    feedback = Path(feedback)
    settings = settings or ReplaySettings.from_environment()
    warnings: list[str] = []
    with DeliveryState(settings.state_file_or_default(), settings.base_url, create=False) as state:
        _scanned, plan = _checked(feedback, settings, state, warnings)
    wanted = {send.line for send in plan.sends[:samples]} if stdout is not None else set()
    for _number, raw in iter_lines(feedback, wanted):
        assert stdout is not None
        stdout.write(json.dumps(json.loads(raw), ensure_ascii=False, indent=2) + "\n")
    return ReplayResult(
        plan, None, HandoffPaths.for_output(feedback), warnings, settings.state_file_or_default()
    )


def _journal_options(settings: ReplaySettings) -> dict[str, Any]:
    d = settings.delivery
    return {
        "endpoint": settings.base_url,
        "state": str(settings.state_file_or_default()),
        "concurrency": d.concurrency,
        "rate": d.rate,
        "batch_size": d.batch_size,
        "retries": d.retries,
        "start_offset": settings.start_offset,
        "uncertain": settings.uncertain,
        "retry_refused": settings.retry_refused,
        "send_older": settings.send_older,
        "new_state": settings.new_state,
        "allowed_signers": str(settings.allowed_signers) if settings.allowed_signers else None,
        "min_approvals": settings.min_approvals,
    }


def _bar(plan: Plan, stderr: IO[str] | None, enabled: bool | None) -> Any:
    from tqdm import tqdm

    show = stderr is not None and (is_terminal(stderr) if enabled is None else enabled)
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
    done = plan.done_before + stats.acked + stats.refused
    if done != bar.n:
        bar.update(done - bar.n)
    bar.set_postfix(ok=stats.acked, retried=stats.retried, failed=stats.refused, refresh=False)


def complete_source(feedback: Path, settings: ReplaySettings) -> str:
    """For --withdraw-missing: the Open WebUI this handoff is a complete admin export of, from
    its manifest; UsageError (one line, nothing sent) when the handoff cannot say so."""
    name = HandoffPaths.for_output(feedback).manifest
    why = f"{option('withdraw_missing')} needs a complete admin export"
    if not settings.verify_manifest:
        raise UsageError(f"{why} checked against its manifest: drop {option('no_verify')}")
    try:
        manifest = json.loads(name.read_text("utf-8"))
        given, options = manifest["input"], manifest["options"]
        source = given.get("source")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{name}: no readable manifest; {why}") from None
    if not isinstance(source, str):
        raise UsageError(
            f"{name}: does not say which Open WebUI the export came from (an export "
            f"owui-replay download did not write, or an older one's); {why}"
        )
    if given.get("scope") != "admin":
        raise UsageError(
            f"{name}: an export downloaded with {command_option('download', 'user-scope')} "
            f"holds one user's ratings; {why}"
        )
    if given.get("complete") is not True:
        raise UsageError(f"{name}: an incremental read holds only what changed; {why}")
    for bound in ("since", "until"):
        if isinstance(options, dict) and options.get(bound) is not None:
            raise UsageError(
                f"{name}: converted with {command_option('convert', bound)}, so it holds part; "
                f"{why}"
            )
    _refuse_unmatchable(name, options, why)
    return source


def _refuse_unmatchable(name: Path, options: Any, why: str) -> None:
    """A handoff whose lines lost feedback_id or updated_at cannot be matched to the ratings
    the state holds: every one of them would look gone."""
    from owui_replay.incremental import drops_identity
    from owui_replay.mapping import MappingOptions

    try:
        mapping = MappingOptions.from_dict(options)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UsageError(f"{name}: its options cannot be read; {why}") from None
    if drops_identity(mapping):
        raise UsageError(
            f"{name}: converted with metadata options that drop feedback_id or updated_at, so "
            f"its lines cannot be matched to the ratings delivered before; {why}"
        )
