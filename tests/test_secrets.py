"""The Portkey key never appears in any output, journal, failed file or error message."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from owui_replay.cli import main
from owui_replay.errors import ExitCode
from owui_replay.secrets import Secret
from tests.helpers import REAL_EXPORT, environment, run_cli
from tests.portkey_stub import API_KEY, Fault, portkey_stub
from tests.replay_helpers import make_feedback


def run_with_key(argv: list[str], key: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with environment(PORTKEY_API_KEY=key):
        code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


def all_files_text(*directories: Path) -> str:
    return "".join(
        p.read_bytes().decode("utf-8", "replace")
        for directory in directories
        for p in directory.rglob("*")
        if p.is_file()
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
def test_key_is_in_no_output_and_no_file(
    tmp_path: Path, private_state_dir: Path, scenario: str
) -> None:
    feedback = make_feedback(tmp_path, 6)
    settings, expected = SCENARIOS[scenario]
    faults = list(settings["faults"])  # the stand-in consumes them: never the shared list
    with portkey_stub(faults=faults) as stub:
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
    assert API_KEY not in all_files_text(tmp_path, private_state_dir)  # journal, state, failed
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


BAD_SHAPES = {  # how the key is stored -> what it looks like to the tool
    "comment-line": API_KEY + "\n# rotated 2026-11-01 by ops\n",
    "second-line": API_KEY + "\n" + API_KEY + "\n",
    "space-inside": API_KEY[:10] + " " + API_KEY[10:],
    "leading-space": " " + API_KEY,
    "trailing-space": API_KEY + " \n",
    "tab": API_KEY + "\t",
    "carriage-return": API_KEY + "\r",
    "nul": API_KEY + "\x00",
    "two-newlines": API_KEY + "\n\n",
}


@pytest.mark.parametrize(
    ("shape", "where"),
    [(shape, where) for shape in sorted(BAD_SHAPES) for where in ("file", "environment")
     if not (shape == "nul" and where == "environment")],  # no OS lets a variable hold NUL
)  # fmt: skip
def test_a_key_with_anything_but_one_final_newline_is_refused_unechoed(
    tmp_path: Path, private_state_dir: Path, shape: str, where: str
) -> None:
    value = BAD_SHAPES[shape]
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        argv = ["replay", str(feedback), "--base-url", stub.url]
        if where == "file":
            key_file = tmp_path / "key.txt"
            key_file.write_text(value)
            code, text = run_with_key([*argv, "--api-key-file", str(key_file)], "unused")
        else:
            code, text = run_with_key(argv, value)
        assert stub.state.requests == 0
    assert code == ExitCode.USAGE, text
    assert "the value is not shown" in text and len(text.splitlines()) == 1
    assert API_KEY[4:] not in text  # not even a part of it
    assert API_KEY[4:] not in all_files_text(private_state_dir) + "".join(
        p.read_text() for p in tmp_path.glob("feedback.*")
    )


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_one_final_newline_is_accepted(tmp_path: Path, ending: str) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(API_KEY + ending)
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        code, _ = run_with_key(
            ["replay", str(feedback), "--base-url", stub.url, "--api-key-file", str(key_file)],
            "unused",
        )
        assert code == ExitCode.OK and set(stub.state.auth_headers_seen) == {API_KEY}
    with portkey_stub() as stub:
        code, _ = run_with_key(["replay", str(feedback), "--base-url", stub.url], API_KEY + ending)
        assert code == ExitCode.OK and set(stub.state.auth_headers_seen) == {API_KEY}


def test_an_open_webui_token_with_a_comment_line_is_refused_unechoed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sk-owui-0123456789abcdef\n# admin token\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["download", "-o", str(tmp_path / "x.json"), "--base-url", "http://127.0.0.1:9",
         "--token-file", str(token_file)],
        stdout=out, stderr=err,
    )  # fmt: skip
    assert code == ExitCode.USAGE and "0123456789abcdef" not in err.getvalue()
    assert "--token-file" in err.getvalue() and "line break" in err.getvalue()


def test_a_token_pasted_with_its_bearer_word_is_sent_without_it(tmp_path: Path) -> None:
    from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub

    token_file = tmp_path / "token"
    token_file.write_text(f"Bearer {ADMIN_TOKEN}\n")
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        got = run_cli(
            "download", "-o", str(tmp_path / "e.json"), "--openwebui-url", server.url,
            "--token-file", str(token_file), "-q",
        )  # fmt: skip
    assert got.code == ExitCode.OK, got.stderr
    assert ADMIN_TOKEN not in got.stderr + got.stdout
