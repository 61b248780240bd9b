"""The sync job: download, convert, verify and replay in one process, for connected machines.

Each run leaves the same audit trail as the manual chain, in its own dated folder under the
work directory (export, sidecar, JSONL, rejects, manifest, journal, failed file, and a
`sync.json` summary written last). What Portkey holds is decided by the delivery state, as for
replay, so a run that was killed is resumed by running the same command again: the next run
downloads afresh and sends only what the endpoint does not hold, announcing uncertain ratings.
A lock file in the work directory keeps two syncs from overlapping.

Where the delivery state lives: with --workdir (and no --state-file) inside it, as
WORKDIR/ledger.sqlite3, so a container that keeps one volume keeps the runs and the state
together; by default beside the default work directory ($XDG_STATE_HOME/owui-replay/), where
replay keeps it too. A state that lost its record of an endpoint is refused when the earlier
runs' journals show deliveries to it (evidence.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from owui_replay.atomic import write_json_atomic
from owui_replay.converting import ConvertResult, convert
from owui_replay.delivery_state import default_state_path
from owui_replay.download import Downloaded, OpenWebUI
from owui_replay.errors import ExitCode, InputError, ReplayError
from owui_replay.evidence import journals_under
from owui_replay.incremental import Fetch, History, read_history, tracking_refusal
from owui_replay.openwebui_live import LiveOpenWebUI
from owui_replay.option_names import option
from owui_replay.replaying import ReplayResult, dry_run, replay
from owui_replay.secrets import Secret, openwebui_token, portkey_key
from owui_replay.settings import ReplaySettings, SyncSettings
from owui_replay.source_history import Withdrawals, after_replay, read
from owui_replay.verifying import verify

RUNS = "runs"
LOCK = "sync.lock"


def default_workdir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "owui-replay" / "sync"


def state_in(workdir: Path, settings: ReplaySettings) -> ReplaySettings:
    """Sync's delivery state: --state-file when given; else WORKDIR/ledger.sqlite3 for a work
    directory of one's own, and the default state beside the default work directory."""
    if settings.state_file is not None:
        return settings
    if workdir == default_workdir():
        return replace(settings, state_file=default_state_path())
    return replace(settings, state_file=workdir / "ledger.sqlite3")


@dataclass
class SyncResult:
    """One sync run: its folder, and what download, convert and replay did."""

    run_dir: Path
    download: Downloaded
    convert: ConvertResult
    replay: ReplayResult
    dry_run: bool
    fetch: Fetch = field(default_factory=lambda: Fetch("full"))
    withdrawals: Withdrawals = field(default_factory=Withdrawals)

    @property
    def sent(self) -> int:
        stats = self.replay.stats
        if stats is None:
            return len(self.replay.plan.sends) + self.withdrawals.gone * (
                self.withdrawals.refused is None and self.withdrawals.enabled
            )
        return stats.acked + stats.refused + self.withdrawals.withdrawn

    @property
    def exit_code(self) -> ExitCode:
        code = self.replay.exit_code
        if code != ExitCode.OK:
            return code
        return ExitCode.OK if self.sent else ExitCode.NOTHING_NEW

    @property
    def outcome(self) -> str:
        if self.exit_code == ExitCode.NOTHING_NEW:
            return "nothing-new"
        if self.exit_code == ExitCode.OK:
            return "would-send" if self.dry_run else "delivered"
        return "failed"

    def as_dict(self) -> dict[str, Any]:
        """The --json summary (and sync.json): replay's part is replay's own --json result."""
        return {
            "outcome": self.outcome,
            "exit_code": int(self.exit_code),
            "dry_run": self.dry_run,
            "run_dir": str(self.run_dir),
            "endpoint": self.replay.plan.endpoint,
            "mode": self.fetch.mode,
            "openwebui": self.fetch.as_dict(),
            "withdrawals": self.withdrawals.as_dict(),
            "download": {
                "path": str(self.download.path),
                "sha256": self.download.sha256,
                "bytes": self.download.bytes,
                "records": self.download.records,
            },
            "convert": {
                "records": self.convert.records,
                "outcomes": dict(self.convert.counts),
                "output": str(self.replay.paths.output),
            },
            "replay": self.replay.as_dict(),
        }

    def summary(self) -> str:
        verb = "dry run" if self.dry_run else "sync"
        read = (
            f"fetched {self.download.records} new or changed records"
            if self.fetch.mode == "incremental"
            else f"downloaded {self.download.records} records"
        )
        gone = self.withdrawals
        withdrew = ""
        if gone.gone:
            done = "would withdraw" if self.dry_run else "withdrawn"
            count = gone.gone if self.dry_run else gone.withdrawn
            withdrew = f"; gone from Open WebUI: {gone.gone}, {done}: {count}"
            if gone.refused or not gone.enabled:
                withdrew = f"; gone from Open WebUI: {gone.gone}, none withdrawn"
        return (
            f"{verb} {self.outcome}: {read} ({self.fetch.bytes_read} bytes, {self.fetch.mode}); "
            f"convert: {self.convert.summary()}; replay: {self.replay.summary()}{withdrew}"
        )


class SyncLock:
    """An flock on WORKDIR/sync.lock, held for the whole run; says who holds it."""

    def __init__(self, workdir: Path, *, wait: bool) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / LOCK
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(self._fd)
            raise ReplayError(
                f"another sync holds {self.path} ({holder or 'unknown process'}); it was "
                f"not started (pass {option('wait')} to wait for it)",
                ExitCode.BUSY,
            ) from None
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} since {stamp}\n".encode(), 0)

    def release(self) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing releases the flock


def new_run_dir(workdir: Path, dry_run: bool) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    run = workdir / RUNS / (stamp + ("-dry-run" if dry_run else ""))
    run.mkdir(parents=True)
    return run


def prune(workdir: Path, keep: int, current: Path) -> list[Path]:
    """Remove all but the newest KEEP run folders (never the current one)."""
    runs = sorted(p for p in (workdir / RUNS).iterdir() if p.is_dir())
    doomed = [p for p in runs[: max(0, len(runs) - keep)] if p != current]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def sync(
    settings: SyncSettings | None = None,
    token: Secret | None = None,
    api_key: Secret | None = None,
    *,
    stderr: IO[str] | None = None,
    stdout: IO[str] | None = None,
    progress: bool | None = False,
) -> SyncResult:
    """One sync run; raises ReplayError (with its exit code) when a step fails.

    What is not passed comes from the environment exactly as on the command line: the
    addresses (SyncSettings.from_environment), $OPENWEBUI_TOKEN and $PORTKEY_API_KEY.
    stderr and stdout None print nothing. A server with no ratings is no error: nothing new.
    """
    settings = settings or SyncSettings.from_environment(workdir=default_workdir())
    token = token or openwebui_token()
    if api_key is None and not settings.dry_run:
        api_key = portkey_key()
    stderr = stderr or io.StringIO()
    stdout = stdout or io.StringIO()
    lock = SyncLock(settings.workdir, wait=settings.wait)
    stack = contextlib.ExitStack()
    run_dir: Path | None = None
    replaying = replace(
        settings.replay,
        evidence_journals=tuple(journals_under(settings.workdir)),
        guard_option_change=not settings.accept_option_change,  # unattended: refuse, exit 14
    )
    try:
        run_dir = new_run_dir(settings.workdir, settings.dry_run)
        export = run_dir / "export.json"
        tracking = tracking_refusal(settings.mapping, settings.user_scope)
        history = History({}, False)
        if tracking is None:
            history = read_history(
                replaying.state_file_or_default(),
                replaying.base_url,
                settings.openwebui_url,
                settings.mapping,
            )
        client = OpenWebUI(
            settings.openwebui_url,
            token,
            timeout=settings.download_timeout,
            verify=settings.verify_tls,
        )
        owui = LiveOpenWebUI(client)
        stack.callback(client.close)
        fetch, downloaded = read(settings, owui, history, tracking, export, stderr, progress)
        feedback = run_dir / "feedback.jsonl"
        converted = convert(
            str(export),
            feedback,
            settings.mapping,
            stderr=stderr,
            progress=progress,
            allow_empty=True,  # an Open WebUI nobody has rated in yet: nothing new, exit 10
        )
        report = verify(feedback, export)
        if not report.ok:  # convert's own output: only a bug or a disk fault gets here
            raise InputError(f"{feedback}: the handoff does not verify:\n{report.render()}")
        if settings.dry_run:
            replayed = dry_run(feedback, replaying, settings.samples, stdout)
        else:
            assert api_key is not None
            replayed = replay(feedback, replaying, api_key, stderr=stderr, progress=progress)
        withdrawals = Withdrawals(enabled=settings.withdraw)
        if tracking is None:
            completed = replayed.exit_code == ExitCode.OK
            withdrawals = after_replay(
                settings,
                owui,
                fetch,
                history,
                feedback,
                completed,
                api_key,
                _logger(stderr, progress),
            )
            fetch.bytes_read = owui.bytes_read + fetch.export_bytes  # with the 404 checks
        result = SyncResult(
            run_dir, downloaded, converted, replayed, settings.dry_run, fetch, withdrawals
        )
        write_json_atomic(run_dir / "sync.json", result.as_dict())
        prune(settings.workdir, settings.keep, run_dir)
        return result
    except BaseException:
        if run_dir is not None and not any(run_dir.iterdir()):
            run_dir.rmdir()  # nothing was fetched: leave no empty folder behind
        raise
    finally:
        stack.close()
        lock.release()


def _logger(stderr: IO[str], progress: bool | None) -> Callable[[str], None]:
    """Withdrawal lines: a refusal or --no-withdraw always (one line, even under cron); each
    withdrawal only when the run talks."""

    def log(text: str) -> None:
        if (
            progress is not False
            or text.startswith(("refused:", "withdrawn"))
            or ("not withdrawn" in text)
        ):
            stderr.write(f"owui-replay: sync: {text}\n")
            stderr.flush()

    return log
