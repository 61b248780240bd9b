"""Configuration failures use up no line, under any concurrency.

A server that routes (or checks the key) before it reads the body leaves the body of the
refused request on the kept-alive connection, and parses it as the next request: the next
request sent there gets a 400 about bytes that were never a payload. With 16 workers some of
them reuse such a connection before the run has stopped; none of those answers may mark a
line refused or write it to the failed file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from owui_replay.converting import dumps_line
from owui_replay.errors import ExitCode
from tests.portkey_stub import portkey_stub
from tests.replay_helpers import journal_events, replay_in_process

LINES = 3000


def feedback_with_comments(directory: Path) -> Path:
    """Payloads like convert's, with a comment holding spaces (as real ratings do)."""
    path = directory / "feedback.jsonl"
    with open(path, "wb") as handle:
        for i in range(LINES):
            handle.write(
                dumps_line(
                    {"trace_id": f"chat-{i}:msg-{i}", "value": 1, "weight": 1,
                     "metadata": {"feedback_id": f"fb-{i:05d}", "comment": "a fine answer"}}
                )
            )  # fmt: skip
    return path


def refused_rows(state: Path) -> int:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return int(
            db.execute(
                "SELECT COUNT(*) FROM ratings WHERE refused_content IS NOT NULL OR unknown > 0"
            ).fetchone()[0]
        )
    finally:
        db.close()


@pytest.mark.parametrize(
    ("settings", "without_v1", "key", "code"),
    [
        ({}, True, None, ExitCode.ENDPOINT),
        ({"redirect_to": "https://elsewhere.example/v1/feedback"}, False, None, ExitCode.ENDPOINT),
        ({}, False, "pk-wrong-key", ExitCode.AUTH),
        ({"forbidden": True}, False, None, ExitCode.AUTH),
    ],
    ids=["no-v1", "redirect", "401", "403"],
)
def test_a_configuration_failure_refuses_no_line_with_16_workers(
    tmp_path: Path, settings: dict, without_v1: bool, key: str | None, code: ExitCode
) -> None:
    feedback = feedback_with_comments(tmp_path)
    state = tmp_path / "ledger.sqlite3"
    with portkey_stub(route_before_body=True, **settings) as stub:
        url = stub.url.removesuffix("/v1") if without_v1 else stub.url
        extra = {"key": key} if key else {}
        result = replay_in_process(
            feedback, url, "--concurrency", "16", "--ledger", str(state), quiet=False, **extra
        )
    assert result.code == code, result.stderr
    assert not (tmp_path / "feedback.failed.jsonl").exists(), result.stderr
    assert refused_rows(state) == 0
    events = journal_events(tmp_path / "feedback.journal.jsonl")
    assert not [e for e in events if e["t"] in ("fail", "ack")]
    assert f"not delivered yet: {LINES}" in result.stderr
