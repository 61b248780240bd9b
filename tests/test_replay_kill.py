"""Kill replay for real, run again, and count what Portkey stored.

Promises under test: nothing is lost; duplicates at the server never exceed what the next run
announced as uncertain before sending; a kill between requests duplicates nothing; SIGTERM
and SIGINT stop cleanly with exit 130. The kill trials of all scenarios run in one test, in a
loop, so that many of them fit in the suite's time.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owui_replay.converting import dumps_line
from owui_replay.errors import ExitCode
from tests.portkey_stub import portkey_stub
from tests.replay_helpers import (
    journal_events,
    make_feedback,
    replay_in_process,
    replay_process,
    uncertain_resent,
)

LINES = 40
TRIALS = 12  # per scenario
SCENARIOS = ("same-file", "restart", "later-export", "regenerated")


def write_ratings(path: Path, ratings: list[tuple[str, int, int]]) -> Path:
    """(feedback id, value, updated_at) per line, as convert would write them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for feedback_id, value, updated_at in ratings:
            handle.write(
                dumps_line(
                    {"trace_id": f"chat:{feedback_id}", "value": value, "weight": 1,
                     "metadata": {"feedback_id": feedback_id, "updated_at": str(updated_at)}}
                )
            )  # fmt: skip
    return path


@dataclass
class Trial:
    scenario: str
    killed: bool
    lost: list[str]
    duplicates: int
    announced: int
    wrong_values: list[str]


class Killer:
    """Kills the replay process from inside the stand-in: when the k-th request arrives,
    after it is stored, or a random moment after it arrives."""

    def __init__(self, rng: random.Random) -> None:
        self.k = rng.randint(1, LINES - 12)  # leaves 3 rounds of 4 requests after the kill
        self.mode = rng.choice(("received", "stored", "timer"))
        self.delay = rng.uniform(0, 0.004)
        self.process: subprocess.Popen[str] | None = None
        self.count = 0
        self.armed: int | None = None
        self.lock = threading.Lock()

    def __call__(self, phase: str, body: Any) -> None:
        with self.lock:
            if phase == "received":
                self.count += 1
                if self.count == self.k:
                    self.armed = threading.get_ident()  # this handler thread's request
            process = self.process if self.armed == threading.get_ident() else None
        if process is None:
            return
        if self.mode == "timer" and phase == "received":  # Popen will not signal a reaped pid
            threading.Timer(self.delay, process.send_signal, (signal.SIGKILL,)).start()
            self.process = None
        elif self.mode == phase:
            process.send_signal(signal.SIGKILL)
            self.process = None


def run_trial(scenario: str, rng: random.Random, root: Path) -> Trial:
    ids = [f"{scenario}-{root.name}-{i:03d}" for i in range(LINES)]
    first = [(fid, 1 if i % 3 else -1, 1000 + i) for i, fid in enumerate(ids)]
    feedback = write_ratings(root / "week1" / "feedback.jsonl", first)
    state = root / "ledger.sqlite3"
    killer = Killer(rng)
    with portkey_stub(latency=0.002, hook=killer) as stub:
        process = replay_process(
            feedback, stub.url, "--concurrency", "4", "--ledger", str(state), "-q"
        )
        killer.process = process
        _, first_err = process.communicate(timeout=60)
        killed = process.returncode == -signal.SIGKILL
        expected = {fid: value for fid, value, _ in first}
        second: Path
        args: tuple[str, ...] = ()
        if scenario == "same-file":
            second = feedback
        elif scenario == "restart":
            second, args = feedback, ("--restart",)
        elif scenario == "later-export":  # every 4th rating flipped, and 6 new ones
            later = [
                (fid, -value if i % 4 == 0 else value, at + 60 if i % 4 == 0 else at)
                for i, (fid, value, at) in enumerate(first)
            ] + [(f"{ids[0]}-new-{j}", 1, 5000 + j) for j in range(6)]
            second = write_ratings(root / "week2" / "feedback.jsonl", later)
            expected = {fid: value for fid, value, _ in later}
        else:  # regenerated: the same ratings written again, in another order, elsewhere
            shuffled = list(first)
            rng.shuffle(shuffled)
            second = write_ratings(root / "again" / "feedback.jsonl", shuffled)
        stored_before = len(stub.state.stored)
        resumed = replay_in_process(
            second, stub.url, "--concurrency", "4", "--ledger", str(state), *args, quiet=False
        )
        assert resumed.code == ExitCode.OK, (scenario, resumed.stderr)
        counts = Counter(p["metadata"]["feedback_id"] for _, p in stub.state.stored)
        latest: dict[str, int] = {}
        for _, payload in stub.state.stored[:stored_before]:
            latest[payload["metadata"]["feedback_id"]] = payload["value"]
        for _, body in stub.state.updates:  # PUTs happen only in the second run
            latest[body["metadata"]["feedback_id"]] = body["value"]
        for _, payload in stub.state.stored[stored_before:]:
            latest[payload["metadata"]["feedback_id"]] = payload["value"]
    announced = uncertain_resent(first_err) + uncertain_resent(resumed.stderr)
    return Trial(
        scenario,
        killed,
        lost=sorted(set(expected) - set(counts)),
        duplicates=sum(n - 1 for n in counts.values()),
        announced=announced,
        wrong_values=sorted(f for f, v in expected.items() if latest.get(f) != v),
    )


@pytest.mark.slow
def test_sigkill_at_random_points_then_any_next_run_loses_nothing_and_announces_duplicates(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261125)
    trials = [
        run_trial(scenario, rng, tmp_path / f"{scenario}-{n}")
        for n in range(TRIALS)
        for scenario in SCENARIOS
    ]
    report = "\n".join(map(str, trials))
    for scenario in SCENARIOS:
        mine = [t for t in trials if t.scenario == scenario]
        assert sum(t.killed for t in mine) >= TRIALS - 1, report  # the kill came mid-run
        assert sum(t.announced for t in mine) > 0, report  # kills in flight were exercised
    assert all(not t.lost for t in trials), report
    assert all(t.duplicates <= t.announced for t in trials), report
    assert all(not t.wrong_values for t in trials), report


def unknown_rows(state: Path) -> int:
    if not state.exists():
        return 0
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM ratings WHERE unknown > 0").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def acked(journal: Path) -> int:
    return sum(len(e["lines"]) for e in journal_events(journal) if e["t"] == "ack")


def test_sigkill_between_requests_duplicates_nothing(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 30)
    journal = tmp_path / "feedback.journal.jsonl"
    state = tmp_path / "ledger.sqlite3"
    announced = 0
    clean_kills = 0
    with portkey_stub() as stub:
        for target in (5, 12, 20):
            process = replay_process(
                feedback, stub.url, "--concurrency", "2", "--rate", "8", "--ledger", str(state)
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                # between requests: enough acks, no rating with an unknown outcome, nothing
                # being handled by the server
                if (
                    acked(journal) >= target
                    and not unknown_rows(state)
                    and not stub.state.in_flight
                ):
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.002)
            _, stderr = process.communicate(timeout=30)
            clean_kills += unknown_rows(state) == 0
            announced += uncertain_resent(stderr)
        final = replay_in_process(feedback, stub.url, "--ledger", str(state), quiet=False)
        announced += uncertain_resent(final.stderr)
        assert final.code == ExitCode.OK, final.stderr
        counts = stub.state.feedback_counts()
    assert sorted(counts) == [f"fb-{i:04d}" for i in range(30)]
    assert sum(n - 1 for n in counts.values()) <= announced
    assert clean_kills >= 1
    if announced == 0:
        assert set(counts.values()) == {1}


def in_flight(journal: Path) -> set[int]:
    """Lines whose last journal event is `send`."""
    pending: set[int] = set()
    for event in journal_events(journal):
        if event["t"] == "send":
            pending.update(event["lines"])
        elif event["t"] in ("ack", "fail", "retry"):
            pending.difference_update(event["lines"])
    return pending


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_in_flight_requests_and_exits_130(
    tmp_path: Path, signum: int
) -> None:
    feedback = make_feedback(tmp_path, 200)
    journal = tmp_path / "feedback.journal.jsonl"
    state = tmp_path / "ledger.sqlite3"
    with portkey_stub(latency=0.05) as stub:
        process = replay_process(feedback, stub.url, "--concurrency", "4", "--ledger", str(state))
        deadline = time.monotonic() + 20
        while acked(journal) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
        events = journal_events(journal)
        context = f"stderr: {stderr!r}; journal tail: {events[-6:]}"
        assert process.returncode == ExitCode.INTERRUPTED, context
        assert "Traceback" not in stderr and "not delivered yet" in stderr, context
        assert events[-1] == {"t": "end", "reason": "interrupted"}, context
        assert not in_flight(journal) and unknown_rows(state) == 0, context
        final = replay_in_process(feedback, stub.url, "--ledger", str(state), quiet=False)
        assert final.code == ExitCode.OK and uncertain_resent(final.stderr) == 0
        counts = stub.state.feedback_counts()
    assert sorted(counts) == [f"fb-{i:04d}" for i in range(200)]
    assert set(counts.values()) == {1}


def test_journal_events_are_json(tmp_path: Path) -> None:
    """The audit journal stays readable by the helpers above (one object per line)."""
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
    raw = (tmp_path / "feedback.journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["t"] for line in raw][:2] == ["header", "run"]
