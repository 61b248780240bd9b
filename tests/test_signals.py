"""Stop signals, as systemd, docker and a terminal send them, from real processes.

Promises: SIGTERM is handled from the tool's first module on (a SIGTERM while the CLI is still
being imported exits 130, it does not kill the process); a stopping replay gives requests in
flight 2 s to be answered, then leaves them, recorded as uncertain, and exits 130 within 5 s
whatever the server does; download and sync stop as promptly, leaving nothing half-written.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, ROOT, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY
from tests.replay_helpers import journal_events, make_feedback, uncertain_resent
from tests.serving import serving
from tests.test_transport import uncertain_rows


class Silent(socketserver.BaseRequestHandler):
    """Reads what the client sends and never answers, until the test ends."""

    server: SilentServer

    def handle(self) -> None:
        self.request.settimeout(0.1)
        while not self.server.done.is_set():
            try:
                data = self.request.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self.server.lock:
                self.server.received += data


class SilentServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Silent)
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.received = bytearray()

    def requests(self, method: bytes) -> int:
        with self.lock:
            return self.received.count(method + b" /")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    with serving(server):
        try:
            yield server
        finally:
            server.done.set()


def tool(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The tool as a real process, through `python -m owui_replay` (the console script's
    entry module)."""
    return subprocess.Popen(
        [sys.executable, "-m", "owui_replay", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


def wait_for(condition: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def caught_signals(pid: int) -> int:
    """The process's SigCgt mask (bit n-1: signal n has a handler); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def has_mapped(pid: int, name: str) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return name in maps.read()


def stop_within(process: subprocess.Popen[str], signum: int, seconds: float) -> tuple[str, float]:
    started = time.monotonic()
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"still running {seconds} s after the signal") from None
    return stderr, time.monotonic() - started


def test_sigterm_is_handled_before_the_cli_is_imported_and_at_any_moment_after(
    tmp_path: Path,
) -> None:
    """The handler is in place before the HTTP stack (_ssl) is loaded; a SIGTERM then, or at
    any moment in the first 0.3 s of the run, exits 130 with one line and no traceback."""
    import _ssl

    ssl_module = Path(_ssl.__file__).name
    feedback = make_feedback(tmp_path, 20)
    with silent_server() as server:  # accepts and never answers: the run is still going
        for n, delay in enumerate((0.0, 0.03, 0.1, 0.3)):
            state = tmp_path / f"ledger-{n}.sqlite3"
            process = tool(
                "replay", str(feedback), "--portkey-url", server.url, "--state-file", str(state),
                "-q", env={"PORTKEY_API_KEY": API_KEY},
            )  # fmt: skip
            wait_for(lambda p=process: caught_signals(p.pid) & (1 << (signal.SIGTERM - 1)))
            assert not has_mapped(process.pid, ssl_module), "handler installed too late"
            time.sleep(delay)
            stderr, _ = stop_within(process, signal.SIGTERM, 5)
            assert process.returncode == ExitCode.INTERRUPTED, (delay, process.returncode, stderr)
            assert "Traceback" not in stderr and "interrupted" in stderr, (delay, stderr)


def test_sigterm_while_the_server_never_answers_exits_130_within_5_s(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 30)
    state = tmp_path / "ledger.sqlite3"
    journal = tmp_path / "feedback.journal.jsonl"
    with silent_server() as server:
        process = tool(
            "replay", str(feedback), "--base-url", f"{server.url}/v1", "--ledger", str(state),
            "--concurrency", "4", env={"PORTKEY_API_KEY": API_KEY},
        )  # fmt: skip
        wait_for(lambda: server.requests(b"POST") == 4)
        stderr, took = stop_within(process, signal.SIGTERM, 5)
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert took < 5 and "Traceback" not in stderr, stderr
    assert "left 4 requests without an answer" in stderr, stderr
    assert uncertain_rows(state) == 4  # they may have arrived: the next run says so
    events = journal_events(journal)
    assert events[-1] == {"t": "end", "reason": "interrupted"}
    abandoned = [e for e in events if e["t"] == "retry" and "abandoned" in e.get("why", "")]
    assert sum(len(e["lines"]) for e in abandoned) == 4, events
    with environment(PORTKEY_API_KEY=API_KEY):  # the same endpoint: what would be sent
        plan = run_cli("replay", str(feedback), "--base-url", f"{server.url}/v1",
                       "--ledger", str(state), "--dry-run", "--samples", "0")  # fmt: skip
    assert plan.code == ExitCode.OK, plan.stderr
    assert "would POST 30" in plan.stderr and uncertain_resent(plan.stderr) == 4, plan.stderr


def test_download_stops_on_sigterm_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    with silent_server() as server:
        process = tool(
            "download", "-o", str(out), "-q",
            env={"OPENWEBUI_BASE_URL": server.url, "OPENWEBUI_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
        wait_for(lambda: server.requests(b"GET") == 1)
        stderr, took = stop_within(process, signal.SIGTERM, 5)
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert took < 2 and "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == []


def test_sync_stops_on_sigterm_while_portkey_never_answers(tmp_path: Path) -> None:
    served = tmp_path / "served.json"
    served.write_bytes(REAL_EXPORT.read_bytes())
    workdir = tmp_path / "work"
    with silent_server() as server, openwebui_stub(export_file=served) as owui:
        env = {
            "OPENWEBUI_BASE_URL": owui.url, "OPENWEBUI_TOKEN": ADMIN_TOKEN,
            "PORTKEY_API_KEY": API_KEY, "PORTKEY_BASE_URL": f"{server.url}/v1",
        }  # fmt: skip
        process = tool("sync", "--workdir", str(workdir), "-q", env=env)
        wait_for(lambda: server.requests(b"POST") == 8)  # every line of the export in flight
        stderr, took = stop_within(process, signal.SIGTERM, 5)
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert took < 5 and "Traceback" not in stderr, stderr


def test_a_stop_signal_reaches_the_handler_through_the_console_script_module() -> None:
    """`python -m owui_replay` and the console script both start at owui_replay.entry."""
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")  # no tomllib on Python 3.10
    scripts = pyproject.split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    assert scripts.strip() == 'owui-replay = "owui_replay.entry:main"'
    first = (ROOT / "owui_replay" / "__main__.py").read_text()
    assert "from owui_replay.entry import main" in first.split('"""', 2)[2].lstrip()[:40]
    with environment(OWUI_REPLAY_TRACEBACK=""):
        done = subprocess.run(
            [sys.executable, "-c", "import owui_replay.entry, signal, json, sys; "
             "print(json.dumps([signal.getsignal(signal.SIGTERM).__module__, "
             "'owui_replay.cli' in sys.modules, 'requests' in sys.modules]))"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert json.loads(done.stdout) == ["owui_replay.entry", False, False], done.stderr
