"""Kill replay for real, resume, and count what Portkey stored.

Promises under test: every line is acknowledged at least once in the end; duplicates at the
server never exceed the lines that the resumed runs reported as uncertain; no duplicates at
all when the kill came between requests; SIGTERM stops cleanly with exit 130.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.portkey_stub import portkey_stub
from tests.replay_helpers import (
    journal_events,
    make_feedback,
    possible_duplicates,
    replay_process,
    uncertain_resent,
)

LINES = 400  # ~2 s of sending at 20 ms and 4 workers: room for 5 kills on a fast machine


def in_flight(journal: Path) -> set[int]:
    """Lines whose last journal event is `send` (what a kill now would leave uncertain)."""
    pending: set[int] = set()
    for event in journal_events(journal):
        if event["t"] == "send":
            pending.update(event["lines"])
        elif event["t"] in ("ack", "fail", "retry"):
            pending.difference_update(event["lines"])
    return pending


def acked(journal: Path) -> int:
    return sum(len(e["lines"]) for e in journal_events(journal) if e["t"] == "ack")


def finish(feedback: Path, url: str, *args: str) -> tuple[int, str]:
    process = replay_process(feedback, url, *args)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_sigkill_at_random_points_loses_nothing_and_reports_every_duplicate(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261123)
    feedback = make_feedback(tmp_path, LINES)
    journal = tmp_path / "feedback.journal.jsonl"
    reported = 0
    kills = 0
    with portkey_stub(latency=0.02) as stub:
        while kills < 5:
            process = replay_process(feedback, stub.url, "--concurrency", "4")
            time.sleep(rng.uniform(0.1, 0.4))
            if process.poll() is not None:
                break  # finished before the kill
            process.send_signal(signal.SIGKILL)
            _, stderr = process.communicate(timeout=30)
            assert process.returncode == -signal.SIGKILL
            reported += uncertain_resent(stderr)  # from the start of this (killed) run
            kills += 1
        code, stderr = finish(feedback, stub.url, "--concurrency", "4")
        reported += uncertain_resent(stderr)
        assert code == ExitCode.OK, stderr
        assert possible_duplicates(stderr) == 0
        counts = stub.state.feedback_counts()
    assert kills == 5, "a run finished before its kill: raise LINES or the latency"
    assert sorted(counts) == [f"fb-{i:04d}" for i in range(LINES)]  # nothing lost
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= reported
    assert acked(journal) >= LINES


def test_sigkill_between_requests_duplicates_nothing(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 30)
    journal = tmp_path / "feedback.journal.jsonl"
    reported = 0
    clean_kills = 0
    with portkey_stub() as stub:
        for target in (5, 12, 20):
            process = replay_process(feedback, stub.url, "--concurrency", "2", "--rate", "8")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                # between requests: enough acks, nothing sent-but-unanswered in the journal,
                # nothing being handled by the server
                if acked(journal) >= target and not in_flight(journal) and not stub.state.in_flight:
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.002)
            _, stderr = process.communicate(timeout=30)
            if not in_flight(journal):
                clean_kills += 1
            reported += uncertain_resent(stderr)
        code, stderr = finish(feedback, stub.url)
        reported += uncertain_resent(stderr)
        assert code == ExitCode.OK, stderr
        counts = stub.state.feedback_counts()
    assert sorted(counts) == [f"fb-{i:04d}" for i in range(30)]
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= reported
    assert clean_kills >= 1
    if reported == 0:
        assert duplicates == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_in_flight_requests_and_exits_130(
    tmp_path: Path, signum: int
) -> None:
    feedback = make_feedback(tmp_path, 200)
    journal = tmp_path / "feedback.journal.jsonl"
    with portkey_stub(latency=0.05) as stub:
        process = replay_process(feedback, stub.url, "--concurrency", "4")
        deadline = time.monotonic() + 20
        while acked(journal) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
        events = journal_events(journal)
        context = f"stderr: {stderr!r}; journal tail: {events[-6:]}"
        assert process.returncode == ExitCode.INTERRUPTED, context
        assert "Traceback" not in stderr and "not acknowledged yet" in stderr, context
        assert events[-1] == {"t": "end", "reason": "interrupted"}, context
        assert not in_flight(journal), context  # every request that left was answered
        code, stderr = finish(feedback, stub.url, "--concurrency", "4")
        assert code == ExitCode.OK and uncertain_resent(stderr) == 0
        counts = stub.state.feedback_counts()
    assert sorted(counts) == [f"fb-{i:04d}" for i in range(200)]
    assert set(counts.values()) == {1}
