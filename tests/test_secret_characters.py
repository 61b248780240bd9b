"""Invisible or control characters inside a key are refused, and the key is never echoed.

Each of them would go out inside the x-portkey-api-key header (or be refused by requests with
an error that quotes the header): DEL and the C1 controls are control characters; a zero-width
space and a byte order mark (Notepad writes one at the start of a file) are invisible in any
editor, so the key looks right and fails as 401 forever.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import environment, run_cli
from tests.portkey_stub import API_KEY, portkey_stub
from tests.replay_helpers import make_feedback

INSIDE = {
    "DEL": "\x7f",
    "C1-PAD": "\x80",
    "C1-CSI": "\x9b",
    "zero-width-space": "\u200b",
    "byte-order-mark": "\ufeff",
}


def shaped(name: str) -> list[tuple[str, str]]:
    char = INSIDE[name]
    cases = [("middle", API_KEY[:12] + char + API_KEY[12:]), ("end", API_KEY + char + "\n")]
    if name == "byte-order-mark":
        cases.append(("start", char + API_KEY))
    return cases


@pytest.mark.parametrize("where", ["file", "environment"])
@pytest.mark.parametrize("name", sorted(INSIDE))
def test_a_key_with_an_invisible_or_control_character_is_refused_unechoed(
    tmp_path: Path, private_state_dir: Path, name: str, where: str
) -> None:
    feedback = make_feedback(tmp_path, 1)
    with portkey_stub() as stub:
        for position, value in shaped(name):
            argv = ["replay", str(feedback), "--base-url", stub.url, "--ledger",
                    str(tmp_path / "ledger.sqlite3")]  # fmt: skip
            if where == "file":
                key_file = tmp_path / "key.txt"
                key_file.write_text(value, "utf-8")
                argv += ["--api-key-file", str(key_file)]
                value = "unused"
            with environment(PORTKEY_API_KEY=value):
                result = run_cli(*argv)
            text = result.stdout + result.stderr
            assert result.code == ExitCode.USAGE, (position, text)
            assert "control character" in text and "the value is not shown" in text, text
            assert len(text.strip().splitlines()) == 1, text
            assert API_KEY[4:16] not in text and API_KEY[-12:] not in text
        assert stub.state.requests == 0
    assert not (tmp_path / "ledger.sqlite3").exists()
