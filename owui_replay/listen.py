"""The live mirror: Open WebUI's feedback events in, the same ratings in Portkey within moments.

An event is only a hint. Open WebUI signs nothing, so anyone who can reach the listener could
post one; what it names is fetched from Open WebUI with the listener's own admin token,
validated against the bundled schema, mapped with convert's code and options, and judged
against the delivery state exactly as replay judges a line (POST new, PUT changed, skip
identical). A forged event can therefore cause a fetch, never a send of anything Open WebUI
does not hold. The hint (subject id, event type) is committed to disk before the listener
answers 200, so a crash loses none; and since Open WebUI never retries, a reconcile at start-up
and every --reconcile-every compares the /ids list with what the listener last saw, fetching
what is new or changed and withdrawing what disappeared.

One worker thread does all fetching and sending, so a rating is never judged twice at once.
Withdrawal: Portkey has no DELETE; a rating deleted in Open WebUI is PUT with the same value,
weight 0 and metadata.withdrawn "true", only for ratings this listener received from the same
Open WebUI, only when the deletion is confirmed (a 404 on the record, or absence from a
complete /ids list plus a 404), and never more than --max-withdraw at once.
Options: a delivered rating that would change only because the listener's mapping options
differ from those of the delivered version is skipped (logged, counted in /healthz) unless
the change was accepted at start; the first reconcile after the options changed re-reads
every record, so a restart that accepts the change rewrites them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from owui_replay.converting import dumps_line
from owui_replay.delivery import Deliverer, FailedFile, Send
from owui_replay.delivery_state import (
    DeliveryState,
    Known,
    LineState,
    Rating,
    default_state_path,
    judge,
    rating_of,
)
from owui_replay.download import OpenWebUI
from owui_replay.errors import ReplayError, UsageError
from owui_replay.journal import Journal
from owui_replay.listen_audit import DailyAudit, today
from owui_replay.listen_server import ListenServer, Receiver
from owui_replay.live_state import SETTLE_SECONDS, Hint, LiveState, new_or_changed
from owui_replay.mapping import Mapper, Skip
from owui_replay.openwebui_live import LiveOpenWebUI, OpenWebUIDown
from owui_replay.option_change import OptionSet, describe, differences
from owui_replay.option_names import command_option, option
from owui_replay.portkey_client import PortkeyClient
from owui_replay.replaying import refuse_silent_fresh_start
from owui_replay.schemas import OPENWEBUI_SCHEMA, PORTKEY_SCHEMA, RecordValidator
from owui_replay.secrets import Secret, clean_secret
from owui_replay.settings import ListenSettings, ReplaySettings
from owui_replay.withdrawal import held_and_gone, over_cap, plan_withdrawal
from owui_replay.words import plural

SECRET_FILE = "events.secret"
JOURNAL = "listen.journal.jsonl"  # read back by the lost-state check, as replay's journals are
SECRET_ENV = "OWUI_REPLAY_EVENTS_SECRET"
FETCH_CONCURRENCY = 8
CHUNK = 64  # records fetched and judged per delivery round (bounds memory on a first start)
EVENTS = ["feedback.*"]
WHERE_TO_PASTE = "Admin Panel > Settings > Events > Add webhook"


def default_workdir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "owui-replay" / "listen"


def state_in(workdir: Path, settings: ReplaySettings) -> ReplaySettings:
    """The listener's delivery state, placed as sync places its own: --state-file when given;
    else the default state beside the default work directory (the one sync and replay use by
    default, so an endpoint has one state), and WORKDIR/ledger.sqlite3 beside a work directory
    of one's own (one volume holds both)."""
    if settings.state_file is not None:
        return settings
    if workdir == default_workdir():
        return replace(settings, state_file=default_state_path())
    return replace(settings, state_file=workdir / "ledger.sqlite3")


def load_events_secret(settings: ListenSettings) -> tuple[Secret, str]:
    """The path secret: --secret-file, else $OWUI_REPLAY_EVENTS_SECRET, else made once and
    kept in WORKDIR/events.secret (0600). Returns it and where it came from."""
    if settings.secret_file is not None:
        try:
            text = settings.secret_file.read_text("utf-8")
        except OSError as exc:
            raise UsageError(
                f"{option('secret_file', settings.secret_file)}: {exc.strerror}"
            ) from None
        value = clean_secret(text, option("secret_file", settings.secret_file))
        return _checked_secret(value, str(settings.secret_file)), str(settings.secret_file)
    if os.environ.get(SECRET_ENV):
        value = clean_secret(os.environ[SECRET_ENV], SECRET_ENV)
        return _checked_secret(value, SECRET_ENV), f"${SECRET_ENV}"
    path = settings.workdir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = clean_secret(path.read_text("utf-8"), str(path))
        return _checked_secret(value, str(path)), str(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return load_events_secret(settings)


def _checked_secret(value: str, where: str) -> Secret:
    if len(value) < 16 or not all(c.isalnum() or c in "-_" for c in value):
        raise UsageError(
            f"{where}: the events secret must be at least 16 letters, digits, '-' or '_' "
            "(it is part of a URL path; the value is not shown)"
        )
    return Secret(value, where)


@dataclass
class Health:
    """What /healthz reports; updated by the worker and the receiver."""

    started: float = field(default_factory=time.time)
    last_event: dict[str, Any] | None = None
    last_reconcile: dict[str, Any] | None = None
    openwebui_failing_since: float | None = None
    portkey_failing_since: float | None = None
    last_error: str | None = None
    refusal: dict[str, Any] | None = None
    option_change: dict[str, Any] | None = None  # ratings skipped: changed only by options
    sent: dict[str, int] = field(
        default_factory=lambda: {"posted": 0, "updated": 0, "withdrawn": 0, "refused": 0}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class _Item:
    """One fetched rating on its way to an outcome in this round."""

    subject: str
    fetched: tuple[float, float]
    record: Any
    payload: dict[str, Any] | None = None
    rating: Rating | None = None
    sending: bool = False
    put: bool = False
    withdraw: bool = False
    done: bool = False
    earlier_options: str | None = None  # skipped: only the options would change it


class Listener:
    """The live mirror's worker: turns hints and reconcile passes into deliveries and
    withdrawals, and keeps the health that /healthz reports."""

    def __init__(
        self,
        settings: ListenSettings,
        token: Secret,
        api_key: Secret,
        log: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.replay = settings.replay
        self.endpoint = self.replay.base_url
        self.source = settings.openwebui_url
        self._secrets = [token, api_key]
        self._log = log
        self.health = Health()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._settle: dict[str, float] = {}  # feedback id -> monotonic time to fetch again
        self._reconcile_due = 0.0  # monotonic; 0: at once
        self._deliverer: Deliverer | None = None
        self._lines = 0
        self._portkey_backoff = 1.0  # seconds before a round Portkey stopped is tried again
        self.fatal: ReplayError | None = None  # a failure no retry mends (set by the worker)
        self.reconciled = False
        self.registered = False
        self.public = settings.public  # the bound port replaces port 0 once known
        settings.workdir.mkdir(parents=True, exist_ok=True)
        self.events_secret, self.secret_source = load_events_secret(settings)
        self._secrets.append(self.events_secret)
        self.state = DeliveryState(
            self.replay.state_file_or_default(), self.endpoint, power_safe=self.replay.power_safe
        )
        journal = settings.workdir / JOURNAL
        with contextlib.ExitStack() as undo:  # a start-up that fails closes what it opened
            undo.callback(self.state.close)
            self._open(settings, token, api_key, journal, undo)
            undo.pop_all()  # started: close() closes them now

    def _open(
        self,
        settings: ListenSettings,
        token: Secret,
        api_key: Secret,
        journal: Path,
        undo: contextlib.ExitStack,
    ) -> None:
        """Lock the endpoint, then open the listener's state, clients, journal and audit, each
        registered in UNDO as soon as it is open."""
        self.state.lock()
        if not self.replay.new_state:  # a lost state would send every rating again
            refuse_silent_fresh_start(journal.with_name("listen.jsonl"), self.replay, self.state)
        self.state.touch_endpoint()
        self.live = LiveState(self.replay.state_file_or_default(), self.endpoint, self.source)
        undo.callback(self.live.close)
        self.options = OptionSet.of_mapping(settings.mapping)
        self.state.note_options(self.options.digest, self.options.text)
        # options other than those of the last complete pass: re-read every record once
        self._recheck_all = self.live.meta("options") != self.options.digest
        self._option_skipped: dict[str, str] = {}  # subject -> the delivered options
        self.owui = LiveOpenWebUI(
            OpenWebUI(
                self.source,
                token,
                timeout=settings.openwebui_timeout,
                verify=settings.verify_tls,
            )
        )
        undo.callback(self.owui.client.close)
        self.portkey = PortkeyClient(
            self.endpoint,
            api_key,
            timeout=self.replay.timeout,
            verify=self.replay.verify_tls,
            pool_size=self.replay.delivery.concurrency,
        )
        undo.callback(self.portkey.close)
        stamp = hashlib.sha256(f"{self.source} {self.endpoint}".encode()).hexdigest()
        self.journal = Journal(
            journal,
            input_name="listen",
            input_sha256=stamp,
            lines=0,
        )
        undo.callback(self.journal.close)
        self.journal.start_run(
            {"endpoint": self.endpoint, "source": self.source, "state": str(self.state.path)}
        )
        self.failed = FailedFile(settings.workdir / "listen.failed.jsonl")
        undo.callback(self.failed.close)
        self.mapper = Mapper(settings.mapping)
        self.record_validator = RecordValidator(OPENWEBUI_SCHEMA)
        self.payload_validator = RecordValidator(PORTKEY_SCHEMA)
        self.pool = ThreadPoolExecutor(FETCH_CONCURRENCY, thread_name_prefix="fetch")
        undo.callback(self.pool.shutdown, wait=False, cancel_futures=True)
        self.audit = DailyAudit(settings.workdir, settings.mapping)
        self._audit_day = ""  # the day whose predecessors are sealed

    # -- talking ------------------------------------------------------------------------

    def log(self, text: str) -> None:
        for secret in self._secrets:
            text = secret.redact(text)
        self._log(text)

    def events_url(self) -> str:
        return f"{self.public.rstrip('/')}/events/{self.events_secret.reveal()}"

    def register(self) -> str:
        return self.owui.register(self.settings.webhook_name, self.events_url(), EVENTS)

    # -- the receiver's side ------------------------------------------------------------

    def accept(self, subject: str, event: str) -> None:
        """Record the hint durably, then wake the worker (called per request)."""
        self.live.add_hint(subject, event)
        with self.health.lock:
            self.health.last_event = {"at": _iso(time.time()), "event": event}
        self.wake.set()

    def health_doc(self) -> tuple[int, dict[str, Any]]:
        now = time.time()
        period = self.settings.reconcile_every
        h = self.health
        with h.lock:
            failing = {
                "openwebui": h.openwebui_failing_since,
                "portkey": h.portkey_failing_since,
            }
            doc: dict[str, Any] = {
                "status": "ok",
                "started": _iso(h.started),
                "last_event": h.last_event,
                "last_reconcile": h.last_reconcile,
                "queue_depth": self.live.queue_depth(),
                "sent": dict(h.sent),
                "counts": {**self.state.counts(), **self.live.counts()},
                "failing_since": {k: _iso(v) for k, v in failing.items()},
                "last_error": h.last_error,
                "refusal": h.refusal,
                "option_change": h.option_change,
                "withdraw": self.settings.withdraw,
                "max_withdraw": self.settings.max_withdraw,
            }
        down = [k for k, since in failing.items() if since is not None and now - since > period]
        if down:
            doc["status"] = "failing: " + ", ".join(down)
            return 503, doc
        return 200, doc

    # -- the worker ---------------------------------------------------------------------

    def run(self) -> None:
        """The worker loop: reconcile when due, then hints and settle fetches, until stop."""
        backoff = 1.0
        while not self.stop.is_set():
            try:
                worked = self._step()
                backoff = 1.0
            except OpenWebUIDown as exc:
                self._failing("openwebui", str(exc))
                worked = False
                self.stop.wait(backoff)
                backoff = min(backoff * 2, max(1.0, self.settings.reconcile_every / 4), 60.0)
            except ReplayError as exc:
                if not self.reconciled:  # a refused token or a wrong URL at start-up
                    self.fatal = exc
                    self.stop.set()
                    return
                self._failing("openwebui", str(exc))
                worked = False
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            except Exception as exc:  # a bug or a broken disk: stop, so a supervisor sees it
                self.fatal = ReplayError(f"the worker failed: {type(exc).__name__}: {exc}")
                self.stop.set()
                return
            if not worked and not self.stop.is_set():
                self.wake.wait(self._idle_seconds())
                self.wake.clear()

    def halt(self) -> None:
        """Stop taking work; in-flight requests finish (or are abandoned by the caller)."""
        self.stop.set()
        self.wake.set()
        deliverer = self._deliverer
        if deliverer is not None:
            deliverer.stop.set()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.failed.close()
        self.journal.end("interrupted" if self.stop.is_set() else "complete")
        self.journal.close()
        self.portkey.close()
        self.owui.client.close()
        self.live.close()
        self.state.close()

    def _idle_seconds(self) -> float:
        now = time.monotonic()
        due = [self._reconcile_due, *self._settle.values()]
        return max(0.01, min(1.0, min(due) - now))

    def _step(self) -> bool:
        self._housekeeping()
        now = time.monotonic()
        if now >= self._reconcile_due:
            self._reconcile_now()
            return True
        hints = self.live.hints()
        due = [fid for fid, at in self._settle.items() if at <= now]
        if not hints and not due:
            return False
        wiped = [h.seq for h in hints if h.event == "feedback.deleted_all"]
        if wiped:
            self.log("event feedback.deleted_all: reconciling with the /ids list")
            self._reconcile_now()
            self.live.drop_hints(wiped)
            return True
        self._serve(hints, due)
        return True

    def _serve(self, hints: list[Hint], due: list[str]) -> None:
        """One round over the hinted and the settle-due ratings; hints answered are dropped."""
        batch = list(dict.fromkeys([h.subject for h in hints] + due))[:CHUNK]
        for fid in batch:
            self._settle.pop(fid, None)  # the round may ask for another settle fetch
        done = self._round(batch)
        for fid in due:
            if fid in batch and fid not in done:
                self._settle.setdefault(fid, time.monotonic() + 1.0)
        self.live.drop_hints([h.seq for h in hints if h.subject in done])

    def _housekeeping(self) -> None:
        """Seal finished audit days; register the webhook until that has worked once."""
        if self._audit_day != today():
            for folder in self.audit.seal_finished_days():
                self.log(
                    f"audit: sealed {folder} (check it with {command_option('verify', 'export')})"
                )
            self._audit_day = today()
        if self.settings.register and not self.registered:  # retried like any call
            outcome = self.register()
            self.registered = True
            self.log(f"webhook {self.settings.webhook_name!r} {outcome} for {', '.join(EVENTS)}")

    def _reconcile_now(self) -> None:
        self.reconcile()
        self._reconcile_due = time.monotonic() + self.settings.reconcile_every

    def _failing(self, which: str, message: str) -> None:
        with self.health.lock:
            attr = f"{which}_failing_since"
            first = getattr(self.health, attr) is None
            if first:
                setattr(self.health, attr, time.time())
            self.health.last_error = self._redacted(message)
        if first:
            self.log(f"{'Open WebUI' if which == 'openwebui' else 'Portkey'} failing: {message}")

    def _recovered(self, which: str) -> None:
        with self.health.lock:
            attr = f"{which}_failing_since"
            was = getattr(self.health, attr)
            setattr(self.health, attr, None)
        if was is not None:
            self.log(f"{'Open WebUI' if which == 'openwebui' else 'Portkey'} answers again")

    def _redacted(self, text: str) -> str:
        for secret in self._secrets:
            text = secret.redact(text)
        return text

    # -- reconcile ----------------------------------------------------------------------

    def reconcile(self) -> None:
        """Compare /ids with what was last seen: fetch the new, changed and unsettled; withdraw
        what disappeared (confirmed by a 404), unless that is more than --max-withdraw."""
        started = time.time()
        present = {e.id: e.updated_at for e in self.owui.ids()}
        self._recovered("openwebui")
        seen = self.live.all_seen()
        recheck = self._recheck_all
        stale = list(present) if recheck else new_or_changed(present, seen)
        fetched = 0
        for i in range(0, len(stale), CHUNK):
            if self.stop.is_set():
                return
            fetched += len(self._round(stale[i : i + CHUNK]))
        if recheck and fetched == len(stale):  # every record reached an outcome: once a
            self._recheck_all = False  # start; a start that accepts the change reads all again
            if not self._option_skipped:
                self.live.set_meta("options", self.options.digest)
        gone = held_and_gone(seen, set(present))
        withdrawn = self._withdraw_missing(gone)
        summary = {
            "at": _iso(started),
            "records": len(present),
            "fetched": fetched,
            "disappeared": len(gone),
            "withdrawn": withdrawn,
            "seconds": round(time.time() - started, 3),
        }
        self.reconciled = True
        with self.health.lock:
            self.health.last_reconcile = summary
        self.live.set_meta("last_reconcile", summary)
        self.log(
            f"reconciled: {len(present)} records in Open WebUI, {len(stale)} new or changed "
            f"fetched, {len(gone)} gone, {withdrawn} withdrawn"
        )

    def _withdraw_missing(self, gone: list[str]) -> int:
        if not gone:
            with self.health.lock:
                self.health.refusal = None
            return 0
        if not self.settings.withdraw:
            self.log(
                f"{len(gone)} ratings gone from Open WebUI; not withdrawn ({option('no_withdraw')})"
            )
            return 0
        message = over_cap(len(gone), self.settings.max_withdraw, "restart")
        if message is not None:
            refusal: dict[str, Any] = {
                "at": _iso(time.time()),
                "would_withdraw": len(gone),
                "max_withdraw": self.settings.max_withdraw,
                "message": message,
            }
            with self.health.lock:
                changed = self.health.refusal is None or (
                    self.health.refusal["would_withdraw"] != len(gone)
                )
                self.health.refusal = refusal
            if changed:
                self.log("refused: " + message)
            return 0
        with self.health.lock:
            self.health.refusal = None
        before = self.health.sent["withdrawn"]
        for i in range(0, len(gone), CHUNK):
            self._round(gone[i : i + CHUNK])
        return self.health.sent["withdrawn"] - before

    # -- one round: fetch, judge, deliver, record -----------------------------------------

    def _round(self, subjects: list[str]) -> set[str]:
        """Fetch each subject, send what Portkey lacks; returns the subjects that reached an
        outcome (the others stay queued). A missing record is withdrawn only on the 404 this
        round received (for an event, or an absence from a complete /ids list)."""
        futures = {fid: self.pool.submit(self._fetch, fid) for fid in subjects}
        items: list[_Item] = []
        for fid, future in futures.items():
            record, fetched = future.result()
            items.append(_Item(fid, fetched, record))
        self._recovered("openwebui")
        sends: list[tuple[Send, bytes]] = []
        for item in items:
            send = self._prepare(item)
            if send is not None:
                sends.append(send)
        self._note_option_skips(items)
        if sends:
            self._deliver(sends)
        for item in items:
            self._conclude(item)
        return {item.subject for item in items if item.done}

    def _fetch(self, fid: str) -> tuple[Any, tuple[float, float]]:
        started = time.time()
        record = self.owui.record(fid)
        return record, (started, time.time())

    def _prepare(self, item: _Item) -> tuple[Send, bytes] | None:
        """Judge one fetched record as replay judges a line; a Send when Portkey lacks it."""
        if item.record is None:
            return self._prepare_withdrawal(item)
        payload = self._payload(item, item.record)
        if payload is None:
            item.done = True
            self._record(item, None, keep=True)
            return None
        raw = dumps_line(payload)
        rating = rating_of(payload, raw, options=self.options.digest)
        known = self.state.lookup(rating.key)
        verdict = judge(rating, known, retry_refused=self.replay.retry_refused)
        item.payload, item.rating = payload, rating
        if verdict is LineState.OPTIONS and not self.settings.accept_option_change:
            assert known is not None  # "": delivered with its options unrecorded
            item.earlier_options, item.done = known.options or "", True
            self._record(item, None, keep=True)  # fetched again after a restart accepting it
            return None
        if verdict is LineState.DELIVERED:
            item.done = True
            self._record(item, payload, keep=False)
            return None
        if not self._worth_sending(item, verdict, known):
            return None
        item.sending = True
        changed = verdict in (LineState.CHANGED, LineState.OPTIONS)
        put_id = known.portkey_id if changed and known else None
        item.put = put_id is not None
        self.live.note_sending(item.subject, payload)
        return Send(self._next_line(), rating, put_id=put_id), raw

    def _payload(self, item: _Item, record: Any) -> dict[str, Any] | None:
        """The payload convert would write for RECORD, or None (said in the log) when convert
        would reject it."""
        if not self.record_validator.is_valid(record) or record.get("id") != item.subject:
            errors = "; ".join(
                f"{e.path}: {e.message}" for e in self.record_validator.errors(record)[:3]
            )
            self.log(f"{item.subject}: skipped: the record fails the schema ({errors or 'id'})")
            return None
        try:
            payload = self.mapper.map(record)
        except Skip as skip:
            self.log(f"{item.subject}: skipped: {skip.code}: {skip.detail}")
            return None
        if not self.payload_validator.is_valid(payload):
            self.log(f"{item.subject}: skipped: the mapped payload fails the Portkey schema")
            return None
        return payload

    def _worth_sending(self, item: _Item, verdict: LineState, known: Known | None) -> bool:
        """New, changed and (announced) uncertain ratings are sent; the rest are recorded."""
        if verdict is LineState.UNCERTAIN:
            assert known is not None
            if self.replay.uncertain == "skip":
                self.log(f"{item.subject}: uncertain skipped ({option('uncertain', 'skip')})")
                item.done = True
                return False
            self.log(
                f"{item.subject}: uncertain resent: its earlier POST got no answer, so Portkey "
                f"may end with up to {known.unknown} extra copies"
            )
            return True
        if verdict in (LineState.NEW, LineState.CHANGED, LineState.OPTIONS):
            return True
        self.log(f"{item.subject}: not sent: {verdict.value}")
        item.done = True
        self._record(item, None, keep=True)
        return False

    def _note_option_skips(self, items: list[_Item]) -> None:
        """Log this round's option-only skips in one line; /healthz counts them all."""
        for item in items:
            if item.earlier_options is None:
                self._option_skipped.pop(item.subject, None)
        skipped = [item for item in items if item.earlier_options is not None]
        for item in skipped:
            assert item.earlier_options is not None
            self._option_skipped[item.subject] = item.earlier_options
        if not skipped:
            if not self._option_skipped:
                with self.health.lock:
                    self.health.option_change = None
            return
        changes: list[str] = []
        for old in sorted(set(self._option_skipped.values())):
            changes += differences(self.state.option_set(old), self.options.options)
        count = plural(len(self._option_skipped), "delivered rating")
        message = (
            f"{count} would change only because the mapping options differ from those of the "
            f"delivered version ({describe(changes)}); "
            "skipped until the listener is restarted accepting the option change"
        )
        with self.health.lock:
            self.health.option_change = {
                "at": _iso(time.time()),
                "skipped": len(self._option_skipped),
                "changes": list(dict.fromkeys(changes)),
                "message": message,
            }
        self.log("refused: " + message)

    def _prepare_withdrawal(self, item: _Item) -> tuple[Send, bytes] | None:
        seen = self.live.seen(item.subject)
        item.done = True
        if seen is None or seen.source != self.source or not seen.held:
            return None  # never received from this Open WebUI, or already withdrawn
        if not self.settings.withdraw:
            self.log(
                f"{item.subject}: deleted in Open WebUI; not withdrawn ({option('no_withdraw')})"
            )
            return None
        planned = plan_withdrawal(item.subject, seen, self.state, self.live, self.log)
        if planned is None:
            return None
        item.payload, item.rating, item.withdraw = planned.payload, planned.rating, True
        item.done = False
        item.sending = item.put = True
        return Send(self._next_line(), planned.rating, put_id=planned.put_id), dumps_line(
            planned.payload
        )

    def _deliver(self, sends: list[tuple[Send, bytes]]) -> None:
        deliverer = Deliverer(
            self.portkey, self.state, self.journal, self.failed, self.replay.delivery
        )
        deliverer.poll_seconds = 0.002  # a round is a few requests: its end is latency
        self._deliverer = deliverer
        if self.stop.is_set():
            deliverer.stop.set()
        try:
            stats = deliverer.run(iter(sends))
        finally:
            self._deliverer = None
        with self.health.lock:
            self.health.sent["refused"] += stats.refused
        if stats.extra_copies:
            self.log(
                f"extra copies Portkey may hold: {stats.extra_copies} (POSTs that got no answer "
                "were sent again)"
            )
        if stats.stop_reason is not None and not self.stop.is_set():
            self._failing("portkey", f"{stats.stop_reason.value}: {stats.stop_detail}")
            self.stop.wait(self._portkey_backoff)  # the round is retried: its hints stay
            self._portkey_backoff = min(
                self._portkey_backoff * 2, max(1.0, self.settings.reconcile_every / 4), 60.0
            )
        elif stats.acked:
            self._portkey_backoff = 1.0
            self._recovered("portkey")

    def _conclude(self, item: _Item) -> None:
        """After delivery: what the delivery state now holds decides the outcome."""
        if not item.sending or item.rating is None:
            return
        known = self.state.lookup(item.rating.key)
        if known is None:
            return
        if known.portkey_id is not None and known.content == item.rating.content:
            item.done = True
            if item.withdraw:
                assert item.payload is not None
                self.audit.withdrawn(item.subject, known.portkey_id, item.payload)
                self.live.mark_withdrawn(item.subject)
                self._count("withdrawn")
                self.log(f"{item.subject}: withdrawn (PUT {known.portkey_id}, weight 0)")
                return
            self._record(item, item.payload, keep=False)
            self._count("updated" if item.put else "posted")
            verb = "PUT" if item.put else "POST"
            self.log(f"{item.subject}: {verb} -> Portkey {known.portkey_id or '(no id)'}")
        elif known.refused_content == item.rating.content:
            item.done = True
            self.log(f"{item.subject}: refused by Portkey (see listen.failed.jsonl)")
            self._record(item, None, keep=True)

    def _record(self, item: _Item, payload: dict[str, Any] | None, *, keep: bool) -> None:
        if item.record is None:
            return
        self.audit.record(item.record)
        self.live.record_fetch(
            item.subject, int(item.record["updated_at"]), item.fetched, payload, keep
        )
        seen = self.live.seen(item.subject)
        if seen is not None and not seen.settled:
            self._settle[item.subject] = time.monotonic() + SETTLE_SECONDS + 0.1

    def _count(self, what: str) -> None:
        with self.health.lock:
            self.health.sent[what] += 1

    def _next_line(self) -> int:
        self._lines += 1
        return self._lines


@dataclass
class Running:
    """A started listener: the HTTP server and the worker, each on its own thread."""

    listener: Listener
    server: ListenServer
    worker: threading.Thread

    def shutdown(self, grace: float = 4.5) -> bool:
        """Stop receiving and stop the worker; False when in-flight work was abandoned after
        GRACE seconds (every step is its own committed transaction: the state is consistent
        either way, and an abandoned POST is announced as uncertain by the next start)."""
        self.listener.halt()
        self.server.shutdown()
        self.server.server_close()
        self.worker.join(grace)
        if self.worker.is_alive():
            return False
        self.listener.close()
        return True


def start(
    settings: ListenSettings,
    token: Secret,
    api_key: Secret,
    log: Callable[[str], None],
) -> Running:
    """Open the state, bind the port, start receiving; the worker registers the webhook
    (with --register) and reconciles, retrying while Open WebUI does not answer."""
    listener = Listener(settings, token, api_key, log)
    try:
        prefix = urlsplit(settings.public_url).path if settings.public_url else ""
        receiver = Receiver(
            listener.accept, listener.health_doc, listener.events_secret.reveal(), prefix
        )
        try:
            server = ListenServer(settings.host, settings.port, receiver)
        except OSError as exc:
            raise UsageError(
                f"{option('listen')} {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        if settings.public_url is None:
            listener.public = f"http://{settings.host}:{server.port}"
        if not settings.register:
            listener.log(
                f"add a webhook in Open WebUI ({WHERE_TO_PASTE}), events {', '.join(EVENTS)}, "
                f"URL {listener.public.rstrip('/')}/events/SECRET, where SECRET is "
                f"{listener.secret_source}'s content (or pass {option('register')})"
            )
    except BaseException:
        listener.close()
        raise
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="listen-http", daemon=True
    ).start()
    worker = threading.Thread(target=listener.run, name="listen-worker", daemon=True)
    worker.start()
    listener.log(
        f"listening on {settings.host}:{server.port}; Open WebUI {listener.source}, Portkey "
        f"{listener.endpoint}; reconcile every {settings.reconcile_every:g} s"
    )
    return Running(listener, server, worker)
