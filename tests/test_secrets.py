"""The Portkey key never appears in any output, journal, failed file or error message."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from owui_replay.cli import main
from owui_replay.errors import ExitCode
from owui_replay.secrets import Secret
from tests.conftest import environment
from tests.portkey_stub import API_KEY, Fault, portkey_stub
from tests.replay_helpers import make_feedback


def run_with_key(argv: list[str], key: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with environment(PORTKEY_API_KEY=key):
        code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


def all_files_text(directory: Path) -> str:
    return "".join(
        p.read_bytes().decode("utf-8", "replace") for p in directory.rglob("*") if p.is_file()
    )


SCENARIOS = {  # stub settings, expected exit code
    "ok": (dict(faults=[]), ExitCode.OK),
    "refused-and-echoed": (
        dict(faults=[Fault("400-echo-key"), Fault("400")]),
        ExitCode.DELIVERY_FAILED,
    ),
    "retried": (dict(faults=[Fault("429"), Fault("500"), Fault("drop-after")]), ExitCode.OK),
    "auth": (dict(faults=[Fault("401")] * 10), ExitCode.AUTH),
    "forbidden": (dict(faults=[Fault("403")] * 10), ExitCode.AUTH),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_key_is_in_no_output_and_no_file(tmp_path: Path, scenario: str) -> None:
    feedback = make_feedback(tmp_path, 6)
    settings, expected = SCENARIOS[scenario]
    with portkey_stub(**settings) as stub:
        argv = [
            "--traceback",
            "replay",
            str(feedback),
            "--base-url",
            stub.url,
            "--concurrency",
            "1",
        ]
        code, text = run_with_key(argv, API_KEY)
        assert API_KEY in stub.state.auth_headers_seen  # it was really used
    assert code == expected, text
    assert API_KEY not in text
    assert API_KEY not in all_files_text(tmp_path)
    if scenario == "refused-and-echoed":
        assert "bad request for key ***" in all_files_text(tmp_path)


def test_key_is_not_in_errors_about_the_connection(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    argv = ["replay", str(feedback), "--base-url", "http://127.0.0.1:9/v1", "--retries", "0"]
    code, text = run_with_key(argv, API_KEY)
    assert code != 0
    assert API_KEY not in text and API_KEY not in all_files_text(tmp_path)


def test_key_is_not_in_a_dry_run_or_usage_errors(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    for argv in (
        ["replay", str(feedback), "--dry-run"],
        ["replay", str(feedback), "--base-url", "http://example.com"],
        ["replay", str(feedback), "--concurrency", "0"],
    ):
        _, text = run_with_key(argv, API_KEY)
        assert API_KEY not in text


def test_secret_objects_do_not_print_themselves() -> None:
    secret = Secret(API_KEY, "PORTKEY_API_KEY")
    assert API_KEY not in repr(secret) and API_KEY not in str(secret) and API_KEY not in f"{secret}"
    assert secret.redact(f"x {API_KEY} y") == "x *** y"
