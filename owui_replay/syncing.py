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

import fcntl
import io
import os
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from owui_replay.atomic import write_json_atomic
from owui_replay.converting import ConvertResult, convert
from owui_replay.delivery_state import default_state_path
from owui_replay.download import Downloaded, OpenWebUI, download
from owui_replay.errors import ExitCode, InputError, ReplayError
from owui_replay.evidence import journals_under
from owui_replay.replaying import ReplayResult, dry_run, replay
from owui_replay.secrets import Secret, openwebui_token, portkey_key
from owui_replay.settings import ReplaySettings, SyncSettings
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

    @property
    def sent(self) -> int:
        stats = self.replay.stats
        if stats is None:
            return len(self.replay.plan.sends)
        return stats.acked + stats.refused

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
        return (
            f"{verb} {self.outcome}: downloaded {self.download.records} records; "
            f"convert: {self.convert.summary()}; replay: {self.replay.summary()}"
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
                "not started (pass --wait to wait for it)",
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
    run_dir: Path | None = None
    replaying = replace(
        settings.replay,
        evidence_journals=tuple(journals_under(settings.workdir)),
        guard_option_change=not settings.accept_option_change,  # unattended: refuse, exit 14
    )
    try:
        run_dir = new_run_dir(settings.workdir, settings.dry_run)
        export = run_dir / "export.json"
        client = OpenWebUI(
            settings.openwebui_url,
            token,
            timeout=settings.download_timeout,
            verify=settings.verify_tls,
        )
        try:
            downloaded = download(
                client, export, user_scope=settings.user_scope, stderr=stderr, progress=progress
            )
        finally:
            client.close()
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
        result = SyncResult(run_dir, downloaded, converted, replayed, settings.dry_run)
        write_json_atomic(run_dir / "sync.json", result.as_dict())
        prune(settings.workdir, settings.keep, run_dir)
        return result
    except BaseException:
        if run_dir is not None and not any(run_dir.iterdir()):
            run_dir.rmdir()  # nothing was fetched: leave no empty folder behind
        raise
    finally:
        lock.release()
