"""Messages say what to fix: an unreachable Portkey is one line at once, as Open WebUI's is."""

from __future__ import annotations

import time
from pathlib import Path

from owui_replay.errors import ExitCode
from tests.portkey_stub import portkey_stub
from tests.proxy_stub import closed_port
from tests.replay_helpers import make_feedback, replay_in_process


def test_a_portkey_that_refuses_connections_is_one_line_at_once(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 4)
    started = time.monotonic()
    run = replay_in_process(feedback, f"http://127.0.0.1:{closed_port()}/v1", quiet=True)
    took = time.monotonic() - started
    assert run.code == ExitCode.NETWORK, run.stderr
    assert took < 5, f"retried for {took:.1f} s"
    errors = [line for line in run.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "connection refused (is Portkey running" in errors[0]
    assert "HTTPConnectionPool" not in run.stderr and "Max retries" not in run.stderr
    assert "run again" not in run.stderr.lower()
    with portkey_stub() as stub:  # nothing was left uncertain: each line is posted once
        real = replay_in_process(feedback, stub.url, quiet=False)
        assert real.code == ExitCode.OK and "uncertain resent: 0" in real.stderr
        assert set(stub.state.feedback_counts().values()) == {1}


def test_https_to_a_plain_http_server_says_so_instead_of_asking_for_a_ca(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        run = replay_in_process(feedback, stub.url.replace("http://", "https://"), quiet=True)
    assert run.code == ExitCode.DELIVERY_FAILED, run.stderr
    assert "does not speak TLS" in run.stderr and "http://" in run.stderr
    assert "--ca-bundle" not in run.stderr
