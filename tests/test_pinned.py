"""Small things that are easy to get a little wrong, pinned down deterministically: offsets
past a byte-order mark, a retry counter that counts every retry, a 429's pause reaching every
worker, and a handoff cut exactly after a complete line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, ROOT, run_cli
from tests.portkey_stub import Fault, portkey_stub
from tests.replay_helpers import journal_events, make_feedback, replay_in_process

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_offsets_count_the_byte_order_mark(tmp_path: Path, stdin: bool) -> None:
    good = json.dumps(json.loads(REAL_EXPORT.read_text()), indent=1).encode()
    data = BOM + good.replace(b'"version": 0', b'"version": NaN', 1)
    export = tmp_path / "bom.json"
    export.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "owui_replay", "convert", "-" if stdin else str(export),
         "-o", str(tmp_path / "f.jsonl")],
        input=data if stdin else None, capture_output=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == ExitCode.BAD_INPUT
    assert f"byte offset {data.index(b'NaN')} in record index 0" in done.stderr.decode()


def test_every_retry_is_counted_not_only_a_lines_first(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub(faults=[Fault("503")] * 3 + [Fault("500")]) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "1", quiet=False)
        assert result.code == ExitCode.OK, result.stderr
    assert "retries: 4" in result.stderr
    retries = [e for e in journal_events(tmp_path / "feedback.journal.jsonl") if e["t"] == "retry"]
    assert [len(e["lines"]) for e in retries] == [1, 1, 1, 1]


def test_a_429_pause_reaches_every_worker(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 300)  # ~1.5 s of sending: it outlasts the pause
    with portkey_stub(latency=0.02, faults=[Fault("429", retry_after="1")]) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "4")
        assert result.code == ExitCode.OK, result.stderr
        (paused_at,) = stub.state.throttled_at
        arrivals = list(stub.state.arrivals)
    # requests already on their way when the 429 was answered may still arrive just after it;
    # none may be sent by any worker during the pause the server asked for
    during = [t for t in arrivals if paused_at + 0.25 < t < paused_at + 0.9]
    assert not during, (paused_at, during)
    assert max(arrivals) > paused_at + 0.9  # and the run went on afterwards


def test_a_handoff_cut_exactly_after_a_complete_line_fails_verify(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    data = out.read_bytes()
    out.write_bytes(data[:-1])  # the last line is still valid JSON, without its newline
    json.loads(data[:-1].splitlines()[-1])
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH
    assert "has no newline: the file is truncated" in result.stdout
