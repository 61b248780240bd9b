"""Progress bars appear on a terminal and stay out of logs and pipes."""

from __future__ import annotations

import io
import os
from pathlib import Path

from owui_replay.cli import main
from tests.helpers import REAL_EXPORT
from tests.portkey_stub import API_KEY, portkey_stub
from tests.replay_helpers import make_feedback


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_convert_shows_a_byte_bar_only_on_a_terminal(tmp_path: Path) -> None:
    tty, pipe = Terminal(), io.StringIO()
    assert main(["convert", str(REAL_EXPORT), "-o", str(tmp_path / "a.jsonl")], stderr=tty) == 0
    assert main(["convert", str(REAL_EXPORT), "-o", str(tmp_path / "b.jsonl")], stderr=pipe) == 0
    assert "\r" in tty.getvalue() and "B/s" in tty.getvalue()  # tqdm redraws in place
    assert "\r" not in pipe.getvalue() and pipe.getvalue().count("\n") == 1  # the summary only


def test_replay_counts_lines_on_a_terminal_and_starts_from_earlier_runs(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 30)
    os.environ["PORTKEY_API_KEY"] = API_KEY
    try:
        with portkey_stub() as stub:
            argv = ["replay", str(feedback), "--base-url", stub.url]
            assert main([*argv, "--start-offset", "10"], stderr=io.StringIO()) == 0
            tty = Terminal()
            assert main(argv, stderr=tty) == 0
    finally:
        del os.environ["PORTKEY_API_KEY"]
    text = tty.getvalue()
    assert "20/30" in text and "30/30" in text  # initial= from the journal, then to the end
    assert "ok=" in text and "retried=" in text and "failed=" in text


def test_replay_warns_when_there_is_no_manifest(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    err = io.StringIO()
    os.environ["PORTKEY_API_KEY"] = API_KEY
    try:
        with portkey_stub() as stub:
            assert main(["replay", str(feedback), "--base-url", stub.url, "-q"], stderr=err) == 0
    finally:
        del os.environ["PORTKEY_API_KEY"]
    assert "warning: no feedback.manifest.json beside feedback.jsonl" in err.getvalue()


def test_lines_the_ledger_skips_count_as_done(tmp_path: Path) -> None:
    """A second export of unchanged ratings: the bar starts and ends at 8/8."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name / "f.jsonl"
        assert main(["convert", str(REAL_EXPORT), "-o", str(out), "-q"], stderr=io.StringIO()) == 0
        outs.append(out)
    os.environ["PORTKEY_API_KEY"] = API_KEY
    try:
        with portkey_stub() as stub:
            assert main(["replay", str(outs[0]), "--base-url", stub.url, "-q"]) == 0
            tty = Terminal()
            assert main(["replay", str(outs[1]), "--base-url", stub.url], stderr=tty) == 0
            assert stub.state.requests == 8
    finally:
        del os.environ["PORTKEY_API_KEY"]
    assert "8/8" in tty.getvalue() and "0/8" not in tty.getvalue()
