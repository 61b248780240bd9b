"""The delivery state as operators run it: links, lost or copied state, backups, clocks that
go back, damaged files, and one server under two names. Real processes, real SIGKILL, real
files, and the Portkey and Open WebUI stand-ins."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from owui_replay import delivery_state
from owui_replay.delivery_state import DeliveryState
from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, ROOT, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub
from tests.replay_helpers import make_feedback, replay_in_process, replay_process, uncertain_resent
from tests.test_replay_kill import Killer, write_ratings


def one_line_error(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith("owui-replay: error:")]
    return line


# -- 1. the lock follows the file ----------------------------------------------------------


def test_two_replays_on_one_state_file_through_any_name_exclude_each_other(
    tmp_path: Path,
) -> None:
    feedback = make_feedback(tmp_path, 3)
    state = tmp_path / "real" / "ledger.sqlite3"
    DeliveryState(state, "http://127.0.0.1:1/v1").close()  # the file exists: it can be linked
    (tmp_path / "link.sqlite3").symlink_to(state)
    names = [tmp_path / "link.sqlite3", tmp_path / "real" / ".." / "real" / "ledger.sqlite3"]
    release = threading.Event()
    arrived = threading.Event()

    def hold(phase: str, body: Any) -> None:  # the first run waits inside its first request
        if phase == "received" and not arrived.is_set():
            arrived.set()
            release.wait(30)

    with portkey_stub(hook=hold) as stub:
        first = replay_process(feedback, stub.url, "--ledger", str(state), "--concurrency", "1")
        try:
            assert arrived.wait(30)
            others = [replay_in_process(feedback, stub.url, "--ledger", str(n)) for n in names]
            requests = stub.state.requests
        finally:
            release.set()
            first.communicate(timeout=30)
        assert first.returncode == 0
        os.link(state, tmp_path / "hard.sqlite3")  # SQLite would keep a WAL per name
        linked = [replay_in_process(feedback, stub.url, "--ledger", str(n))
                  for n in (state, tmp_path / "hard.sqlite3")]  # fmt: skip
        assert stub.state.requests == 3
    assert [o.code for o in others] == [ExitCode.BUSY] * 2, [o.stderr for o in others]
    assert requests == 1  # only the first run's request reached the server
    assert all("another owui-replay run is sending" in o.stderr for o in others)
    assert [o.code for o in linked] == [ExitCode.STATE] * 2
    assert all("has 2 names (hard links)" in one_line_error(o.stderr) for o in linked)


# -- 2. a fresh state is never silent when there is evidence -------------------------------


def test_a_lost_state_is_refused_when_the_journal_shows_deliveries(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 5)
    state = tmp_path / "ledger.sqlite3"
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url, "--ledger", str(state)).code == 0
        lost = {
            "missing": replay_in_process(feedback, stub.url, "--ledger", str(tmp_path / "typo")),
            "0-byte": replay_in_process(feedback, stub.url, "--ledger", str(empty)),
        }
        with environment(XDG_STATE_HOME=str(tmp_path / "other-home")):
            lost["other home"] = replay_in_process(feedback, stub.url)
            lost["dry run"] = run_cli("replay", str(feedback), "--base-url", stub.url,
                                      "--dry-run")  # fmt: skip
        assert stub.state.requests == 5  # nothing sent again
        assert not (tmp_path / "typo").exists() and not (tmp_path / "other-home").exists()
        elsewhere = tmp_path / "other-home" / "owui-replay" / "ledger.sqlite3"
        expected = {"missing": tmp_path / "typo", "0-byte": empty, "other home": elsewhere,
                    "dry run": elsewhere}  # fmt: skip
        for case, run in lost.items():
            assert run.code == ExitCode.NO_STATE, (case, run.stderr)
            line = one_line_error(run.stderr)
            assert "feedback.journal.jsonl records 5 deliveries to" in line, line
            assert f"the delivery state {expected[case]} has no record" in line, line
            assert f"(their state: {state})" in line and "--new-state" in line, line
        again = replay_in_process(feedback, stub.url, "--ledger", str(empty), "--new-state")
        assert again.code == 0 and stub.state.requests == 10  # "I know; send"


def test_a_state_behind_its_journal_is_refused_and_a_forgotten_endpoint_is_not(
    tmp_path: Path,
) -> None:
    feedback = make_feedback(tmp_path, 10)
    state, old = tmp_path / "ledger.sqlite3", tmp_path / "old-backup.sqlite3"
    with portkey_stub() as stub:
        url = stub.url
        assert (
            replay_in_process(feedback, url, "--ledger", str(state), "--start-offset", "6").code
            == 0
        )
        assert run_cli("state", "--ledger", str(state), "--backup", str(old)).code == 0
        assert replay_in_process(feedback, url, "--ledger", str(state)).code == 0  # lines 0-5
        behind = replay_in_process(feedback, url, "--ledger", str(old))
        assert behind.code == ExitCode.NO_STATE and stub.state.requests == 10
        line = one_line_error(behind.stderr)
        assert f"acknowledged 6 lines the delivery state {old} has no record of" in line, line
        assert run_cli("state", "--ledger", str(state), "--forget", url).code == 0
        again = replay_in_process(feedback, url, "--ledger", str(state))  # started over
        assert again.code == 0 and stub.state.requests == 20


def test_sync_keeps_its_state_in_its_workdir_and_refuses_a_lost_one(tmp_path: Path) -> None:
    served = tmp_path / "served.json"
    served.write_text(REAL_EXPORT.read_text())
    workdir = tmp_path / "volume"
    with (
        portkey_stub() as pk,
        openwebui_stub(export_file=served) as owui,
        environment(OPENWEBUI_BASE_URL=owui.url, OPENWEBUI_TOKEN=ADMIN_TOKEN,
                    PORTKEY_API_KEY=API_KEY, PORTKEY_BASE_URL=pk.url),
    ):  # fmt: skip
        assert run_cli("sync", "--workdir", str(workdir)).code == 0
        assert (workdir / "ledger.sqlite3").is_file()  # one volume keeps runs and state
        (run,) = (workdir / "runs").iterdir()
        manifest = json.loads((run / "feedback.manifest.json").read_text())
        assert manifest["input"]["taken_at"]  # sync's handoffs say when they were taken
        (workdir / "ledger.sqlite3").unlink()  # the state is lost, the runs are not
        lost = run_cli("sync", "--workdir", str(workdir))
        assert lost.code == ExitCode.NO_STATE and len(pk.state.stored) == 8
    line = one_line_error(lost.stderr)
    assert "records 8 deliveries to" in line and str(workdir / "ledger.sqlite3") in line


# -- 3. state --backup, and a clean exit that cp can copy ----------------------------------


def backing_up_then(
    killer: Killer, state: Path, copy_path: Path, copies: list[dict[str, int]]
) -> Callable[[str, Any], None]:
    """A stand-in hook: at the first request, back the state up (the run is writing it),
    then let the killer do its work."""

    once = threading.Lock()

    def hook(phase: str, body: Any) -> None:
        if phase == "received" and once.acquire(blocking=False):
            copies.append(delivery_state.backup_state(state, copy_path))
        killer(phase, body)

    return hook


def test_backup_after_sigkill_then_replay_with_the_copy_announces_every_copy(
    tmp_path: Path,
) -> None:
    rng = random.Random(18)
    results = []
    for trial in range(6):
        root = tmp_path / f"t{trial}"
        ids = [f"b{trial}-{i:03d}" for i in range(40)]
        feedback = write_ratings(root / "feedback.jsonl", [(f, 1, 1000) for f in ids])
        state, copy_path = root / "ledger.sqlite3", root / "copy.sqlite3"
        killer = Killer(rng)
        live: list[dict[str, int]] = []
        hook = backing_up_then(killer, state, root / "live.sqlite3", live)
        with portkey_stub(latency=0.002, hook=hook) as stub:
            process = replay_process(feedback, stub.url, "--concurrency", "4",
                                     "--ledger", str(state), "-q")  # fmt: skip
            killer.process = process
            _, first_err = process.communicate(timeout=60)
            assert run_cli("state", "--ledger", str(state), "--backup", str(copy_path)).code == 0
            resumed = replay_in_process(feedback, stub.url, "--ledger", str(copy_path),
                                        "--concurrency", "4", quiet=False)  # fmt: skip
            assert resumed.code == 0, resumed.stderr
            counts = stub.state.feedback_counts()
        duplicates = sum(n - 1 for n in counts.values())
        announced = uncertain_resent(first_err) + uncertain_resent(resumed.stderr)
        results.append((process.returncode, duplicates, announced, sorted(set(ids) - set(counts))))
        assert live == [{"endpoints": 1}]  # a consistent copy taken while the run wrote
    assert sum(1 for code, *_ in results if code == -signal.SIGKILL) >= 4, results
    for _code, duplicates, announced, lost in results:
        assert not lost and duplicates <= announced, results


def test_a_backup_names_what_is_wrong_with_its_target(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    state = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url, "--ledger", str(state)).code == 0
    before = state.read_bytes()
    for target, words in ((state, "is the delivery state itself"),
                          (tmp_path / "no" / "copy.sqlite3", "is no folder")):  # fmt: skip
        run = run_cli("state", "--ledger", str(state), "--backup", str(target))
        assert run.code == ExitCode.STATE and words in one_line_error(run.stderr)
    assert state.read_bytes() == before


def test_a_clean_exit_leaves_a_file_that_cp_copies_completely(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 20)
    state = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url, "--ledger", str(state)).code == 0
        wal = Path(str(state) + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # checkpointed into the file
        moved = tmp_path / "new-machine" / "ledger.sqlite3"
        moved.parent.mkdir()
        shutil.copyfile(state, moved)  # the file alone, as `cp` copies it
        again = replay_in_process(feedback, stub.url, "--ledger", str(moved), quiet=False)
        assert again.code == 0 and stub.state.requests == 20
    assert "already delivered: 20" in again.stderr


# -- 4. the newer handoff wins -------------------------------------------------------------


def thumbs() -> list[dict[str, Any]]:
    return [r for r in json.loads(REAL_EXPORT.read_text()) if r.get("snapshot")][:3]


def download_and_convert(owui_url: str, folder: Path) -> Path:
    with environment(OPENWEBUI_BASE_URL=owui_url, OPENWEBUI_TOKEN=ADMIN_TOKEN):
        assert run_cli("download", "-o", str(folder / "export.json")).code == 0
    out = folder / "feedback.jsonl"
    assert run_cli("convert", str(folder / "export.json"), "-o", str(out), "-q").code == 0
    return out


def test_a_later_export_wins_even_when_the_clock_went_back(tmp_path: Path) -> None:
    records = thumbs()
    restored = copy.deepcopy(records)  # Open WebUI restored from a backup, then re-rated
    restored[0]["data"]["rating"] = -restored[0]["data"]["rating"]
    restored[0]["updated_at"] -= 3600
    served = tmp_path / "served.json"
    state = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        served.write_text(json.dumps(records))
        with openwebui_stub(export_file=served) as owui:
            first = download_and_convert(owui.url, tmp_path / "monday")
            served.write_text(json.dumps(restored))
            second = download_and_convert(owui.url, tmp_path / "tuesday")
        manifest = json.loads((second.parent / "feedback.manifest.json").read_text())
        assert manifest["input"]["taken_at"].endswith("Z")
        assert replay_in_process(first, stub.url, "--ledger", str(state)).code == 0
        later = replay_in_process(second, stub.url, "--ledger", str(state), quiet=False)
        assert later.code == 0, later.stderr
        assert [b["value"] for _, b in stub.state.updates] == [-records[0]["data"]["rating"]]
        rerun = replay_in_process(first, stub.url, "--ledger", str(state), quiet=False)
        assert rerun.code == 0 and len(stub.state.updates) == 1  # the older one never wins
        assert "older than what Portkey has: 1" in rerun.stderr
        assert replay_in_process(second, stub.url, "--ledger", str(state)).code == 0
        assert stub.state.requests == 4  # 3 POSTs, 1 PUT, then nothing
    with contextlib.closing(sqlite3.connect(state)) as db:
        taken = dict(db.execute("SELECT rating_key, taken_at FROM ratings").fetchall())
    assert taken[records[0]["id"]] > taken[records[1]["id"]] > 0  # per delivered version


def test_without_export_times_a_backwards_change_is_named_and_sent_only_when_asked(
    tmp_path: Path,
) -> None:
    ids = ["fb-a", "fb-b", "fb-c"]
    first = write_ratings(tmp_path / "1" / "feedback.jsonl", [(i, 1, 1000) for i in ids])
    second = write_ratings(tmp_path / "2" / "feedback.jsonl",
                           [(i, -1, 900) for i in ids[:2]] + [("fb-c", 1, 1000)])  # fmt: skip
    with portkey_stub() as stub:
        assert replay_in_process(first, stub.url).code == 0
        held = replay_in_process(second, stub.url)
        assert held.code == ExitCode.DELIVERY_FAILED and not stub.state.updates
        assert "changed to an older updated_at, not sent: 2" in held.stderr
        assert "--send-older sends them" in held.stderr
        sent = replay_in_process(second, stub.url, "--send-older")
        assert sent.code == 0 and len(stub.state.updates) == 2
        assert replay_in_process(second, stub.url).code == 0  # recorded: nothing left to say
        assert stub.state.requests == 5


# -- 5. a damaged state names the file and the cause ---------------------------------------


def unprivileged(argv: list[str]) -> list[str]:
    """As root, drop the capabilities that ignore file permissions (a read-only file must be
    read-only to the test, as it is to an operator's service account)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root: setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *argv]


def replay_cli(
    feedback: Path, url: str, state: Path, *, limit: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """A real replay; with LIMIT (a fresh state: the journal's deliveries are known) it runs
    with --new-state."""
    argv = [sys.executable, "-m", "owui_replay", "replay", str(feedback), "--base-url", url,
            "--ledger", str(state), "-q", *(["--new-state"] if limit else [])]  # fmt: skip
    return subprocess.run(
        unprivileged(argv), capture_output=True, text=True, timeout=60, preexec_fn=limit,
        env={**os.environ, "PORTKEY_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def small_files(size: int) -> Callable[[], None]:
    def limit() -> None:  # in the child: writes past SIZE fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_every_state_failure_is_one_line_naming_the_file_and_the_cause(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 30)
    cases: dict[str, tuple[subprocess.CompletedProcess[str], Path, str]] = {}
    with portkey_stub() as stub:
        good = tmp_path / "good" / "ledger.sqlite3"
        (tmp_path / "good").mkdir()
        assert replay_in_process(feedback, stub.url, "--ledger", str(good)).code == 0

        def state_copy(name: str) -> Path:
            (tmp_path / name).mkdir()
            return Path(shutil.copy(good, tmp_path / name / "ledger.sqlite3"))

        damaged = state_copy("damaged")
        data = bytearray(damaged.read_bytes())
        noise = random.Random(5)
        for page in range(1, len(data) // 4096):  # every page but the header's
            data[page * 4096 : page * 4096 + 300] = noise.randbytes(300)
        damaged.write_bytes(bytes(data))
        cases["damaged"] = replay_cli(feedback, stub.url, damaged), damaged, "damaged"
        readonly = state_copy("readonly")
        readonly.chmod(0o444)
        cases["read-only file"] = replay_cli(feedback, stub.url, readonly), readonly, "read-only"
        folder = state_copy("ro-folder")
        folder.parent.chmod(0o555)
        try:
            cases["read-only folder"] = (replay_cli(feedback, stub.url, folder), folder,
                                         "folder")  # fmt: skip
        finally:
            folder.parent.chmod(0o755)
        full = tmp_path / "full" / "ledger.sqlite3"
        filled = replay_cli(feedback, stub.url, full, limit=small_files(48 * 1024))
        cases["full disk (state)"] = filled, full, "disk"
        journal = tmp_path / "feedback.journal.jsonl"  # the disk fills up at its next event
        journal.write_bytes(journal.read_bytes().ljust((1 << 20) - 10, b"\n"))
        fresh = tmp_path / "fresh" / "ledger.sqlite3"
        cases["full disk (journal)"] = (replay_cli(feedback, stub.url, fresh, limit=small_files(
            1 << 20)), journal, "disk full")  # fmt: skip
        foreign = tmp_path / "foreign.sqlite3"
        db = sqlite3.connect(foreign)
        db.execute("CREATE TABLE notes (x)")
        db.execute("PRAGMA user_version = 7")
        db.commit()
        db.close()
        before = foreign.read_bytes()
        cases["foreign"] = replay_cli(feedback, stub.url, foreign), foreign, "not an owui-replay"
        assert foreign.read_bytes() == before and not Path(f"{foreign}-wal").exists()
    for command in (["state"], ["state", "--backup", str(tmp_path / "copy.sqlite3")]):
        listed = run_cli(*command, "--ledger", str(damaged))
        assert listed.code == ExitCode.STATE and f"error: {damaged}: " in listed.stderr
    assert not (tmp_path / "copy.sqlite3").exists()
    for case, (run, path, cause) in cases.items():
        assert run.returncode == ExitCode.STATE, (case, run.returncode, run.stderr)
        line = one_line_error(run.stderr)
        assert line.startswith(f"owui-replay: error: {path}: "), (case, line)
        assert cause in line, (case, line)
        assert "Traceback" not in run.stderr, (case, run.stderr)


# -- 6. one server under two names ---------------------------------------------------------


def test_localhost_and_127_0_0_1_for_one_server_are_said_before_sending(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 4)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        by_name = stub.url.replace("127.0.0.1", "localhost")
        twice = replay_in_process(feedback, by_name)
        assert twice.code == ExitCode.NO_STATE and stub.state.requests == 4
        line = one_line_error(twice.stderr)
        assert f"{by_name} reaches the same server (127.0.0.1 port" in line, line
        assert f"--portkey-url {stub.url}" in line and "--new-state" in line
        assert replay_in_process(feedback, stub.url).code == 0  # the name the state knows
        assert stub.state.requests == 4


# -- 7. tests for bugs the suite let through -----------------------------------------------


def test_every_rename_into_the_handoff_folder_is_made_durable_before_the_next(
    tmp_path: Path,
) -> None:
    """strace of a real convert: after each rename into the folder, an fsync of the folder
    comes before the next rename (else a crash could keep a later file without an earlier)."""
    strace = shutil.which("strace")
    assert strace, "strace is needed to watch the system calls of a real convert"
    out = tmp_path / "handoff" / "feedback.jsonl"
    trace = tmp_path / "trace.txt"
    argv = [strace, "-f", "-qq", "-o", str(trace), "-e", "trace=openat,rename,renameat,renameat2,"
            "fsync,fdatasync", sys.executable, "-m", "owui_replay", "convert", str(REAL_EXPORT),
            "-o", str(out), "-q"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = str(out.parent)
    folder_fds: set[str] = set()
    events: list[str] = []
    for line in trace.read_text().splitlines():
        if f'openat(AT_FDCWD, "{folder}", O_RDONLY' in line and "= " in line:
            folder_fds.add(line.rsplit("= ", 1)[1].split()[0])
        elif "rename" in line and f'"{folder}/' in line.split(",", 2)[-1]:
            events.append("rename")
        elif "fsync(" in line and line.split("fsync(", 1)[1].split(")")[0] in folder_fds:
            events.append("fsync-folder")
    assert events.count("rename") == 3, events  # rejects, output, manifest
    order = "".join("R" if e == "rename" else "F" for e in events)
    assert "RR" not in order and order.endswith("F"), order


def test_a_rerun_after_a_put_sends_nothing(tmp_path: Path) -> None:
    ids = ["fb-a", "fb-b"]
    first = write_ratings(tmp_path / "1" / "feedback.jsonl", [(i, 1, 1000) for i in ids])
    second = write_ratings(
        tmp_path / "2" / "feedback.jsonl", [("fb-a", -1, 2000), ("fb-b", 1, 1000)]
    )
    with portkey_stub() as stub:
        assert replay_in_process(first, stub.url).code == 0
        assert replay_in_process(second, stub.url).code == 0 and len(stub.state.updates) == 1
        again = replay_in_process(second, stub.url, quiet=False)
        assert again.code == 0 and stub.state.requests == 3, again.stderr
    assert "already delivered: 2" in again.stderr


def test_an_empty_journal_left_by_a_kill_gets_its_header(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    journal = tmp_path / "feedback.journal.jsonl"
    journal.write_bytes(b"")  # killed between creating the journal and writing its header
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        journal_copy = journal.read_bytes()
        assert replay_in_process(feedback, stub.url).code == 0  # reads the header it wrote
        assert stub.state.requests == 3
    header = json.loads(journal_copy.split(b"\n", 1)[0])
    assert header["t"] == "header" and header["lines"] == 3


def moved_between_passes(later: bool) -> Callable[[Any, int], None]:
    """After the first pass has read page 1, one rating on it is changed: updated later (it
    moves to the front, with the oldest rating updated too) or, after a database restore,
    with an older updated_at (to the end). Either way the pages shift, so the pass misses a
    rating and another pass is read."""

    def on_page(state: Any, page: int) -> None:
        if page != 1 or getattr(state, "changed", False):
            return
        state.changed = True
        with state.lock:
            item = state.user_items.pop(5)
            item["data"]["rating"] = -item["data"]["rating"]
            item["updated_at"] += 1000 if later else -5000
            state.user_items.insert(0 if later else len(state.user_items), item)
            if later:  # and the last one is updated too: page 2 slides under the reader
                last = state.user_items.pop()
                last["updated_at"] += 2000
                state.user_items.insert(0, last)

    return on_page


def test_user_scope_keeps_the_version_read_last(tmp_path: Path) -> None:
    from tests.openwebui_stub import USER_TOKEN
    from tests.test_download import user_items

    for later in (True, False):
        items = user_items(37)
        for i, item in enumerate(items):
            item["updated_at"] = 10_000 - i  # newest first, as the server keeps them
        changed = items[5]["id"]
        before = items[5]["data"]["rating"]
        out = tmp_path / f"mine-{later}.json"
        with (
            openwebui_stub(user_items=items, on_page=moved_between_passes(later)) as owui,
            environment(OPENWEBUI_BASE_URL=owui.url, OPENWEBUI_TOKEN=USER_TOKEN),
        ):
            assert run_cli("download", "-o", str(out), "--user-scope").code == 0
        records = {r["id"]: r for r in json.loads(out.read_text())}
        assert len(records) == 37
        assert records[changed]["data"]["rating"] == -before, later


def test_only_an_address_or_localhost_is_resolved_to_compare_servers() -> None:
    from owui_replay.evidence import same_server

    assert same_server("http://localhost:5/v1", "http://127.0.0.1:5/v1") == "127.0.0.1 port 5"
    assert same_server("http://localhost:5/v1", "http://127.0.0.1:6/v1") is None  # port
    assert same_server("http://localhost:5/v1", "http://127.0.0.1:5/v2") is None  # path
    assert same_server("https://localhost/v1", "http://127.0.0.1:443/v1") is None  # scheme
    assert same_server("http://127.0.0.1:5/v1", "http://127.0.0.2:5/v1") is None  # no overlap
    # two names are never resolved: one load balancer can serve two sites
    assert same_server("https://a.example.invalid/v1", "https://b.example.invalid/v1") is None


def test_a_folder_given_as_the_state_is_named_as_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    got = run_cli("state", "--state-file", str(folder))
    assert got.code == ExitCode.STATE and "is a folder, not a delivery state file" in got.stderr


def test_a_backup_taken_while_a_run_holds_an_endpoint_says_what_it_misses(tmp_path: Path) -> None:
    import subprocess
    import sys

    from owui_replay.delivery_state import DeliveryState

    state = tmp_path / "ledger.sqlite3"
    with DeliveryState(state, "http://127.0.0.1:9/v1") as made:
        made.touch_endpoint()
    with subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path\n"
         "from owui_replay.delivery_state import DeliveryState\n"
         "s = DeliveryState(Path(sys.argv[1]), 'http://127.0.0.1:9/v1'); s.lock()\n"
         "print('held', flush=True); time.sleep(30)", str(state)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            during = run_cli("state", "--state-file", str(state), "--backup", str(tmp_path / "c1"))
        finally:
            holder.kill()  # leaving the with block waits for it and closes its pipe
    after = run_cli("state", "--state-file", str(state), "--backup", str(tmp_path / "c2"))
    assert during.code == after.code == ExitCode.OK
    assert "a run was sending to http://127.0.0.1:9/v1 while this copy was taken" in during.stderr
    assert "warning" not in after.stderr
