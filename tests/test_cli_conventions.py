"""The CLI behaves like the tools users know: no abbreviations, exit codes in every help,
--traceback anywhere, -V, usage when no command is given, one program name per error."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from owui_replay import __version__
from owui_replay.cli import build_parser
from owui_replay.errors import ExitCode
from tests.helpers import environment, run_cli

MINIMAL = {  # enough positionals and required options for each command to parse
    "download": ["-o", "x.json"],
    "convert": ["export.json"],
    "verify": ["f.jsonl"],
    "approve": ["f.jsonl", "--key", "k"],
    "replay": ["f.jsonl"],
    "inspect": ["export.json"],
    "state": [],
    "sync": [],
    "listen": ["--listen", "127.0.0.1:0"],
    "completion": ["bash"],
    "config": [],
    "report": ["f.jsonl"],
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_covered() -> None:
    assert set(subparsers()) == set(MINIMAL)


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_no_option_is_accepted_by_a_prefix(command: str) -> None:
    parser = build_parser()
    sub = subparsers()[command]
    flags = {f for a in sub._actions for f in a.option_strings}
    tried = 0
    for flag in sorted(flags):
        if not flag.startswith("--") or len(flag) < 5:
            continue
        prefix = flag[:-2]
        if prefix in flags or prefix == "--":
            continue
        _, extras = parser.parse_known_args([command, *MINIMAL[command], prefix])
        assert prefix in extras, f"{command} accepted {prefix} for {flag}"
        tried += 1
    assert tried >= 1


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_every_help_lists_every_exit_code(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0
    codes = result.stdout.split("exit codes:\n", 1)[1]
    for code in ExitCode:
        assert f"  {int(code):<4} " in codes, (command, code)


def test_traceback_is_accepted_after_the_command_and_from_the_environment(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "missing.json")
    after = run_cli("convert", missing, "-o", str(tmp_path / "o.jsonl"), "--traceback")
    assert after.code == ExitCode.BAD_INPUT and "Traceback" in after.stderr
    with environment(OWUI_REPLAY_TRACEBACK="1"):
        env = run_cli("convert", missing, "-o", str(tmp_path / "o.jsonl"))
    assert "Traceback" in env.stderr
    plain = run_cli("convert", missing, "-o", str(tmp_path / "o.jsonl"))
    assert "Traceback" not in plain.stderr and plain.stderr.count("\n") == 1


def test_version_and_no_command() -> None:
    for flag in ("-V", "--version"):
        assert run_cli(flag).stdout.strip() == f"owui-replay {__version__}"
    bare = run_cli()
    assert bare.code == ExitCode.USAGE
    assert bare.stderr.startswith("usage: owui-replay") and "sync" in bare.stderr


def test_an_argument_error_names_the_program_once() -> None:
    result = run_cli("convert", "x.json", "--weight", "2")
    assert result.code == ExitCode.USAGE
    assert result.stderr.startswith("owui-replay convert: error: argument --weight: 2.0 is")
    assert result.stderr.count("owui-replay") == 2  # the prefix and the --help pointer


def test_words_agree_with_their_numbers(tmp_path: Path) -> None:
    from owui_replay.words import plural

    assert [plural(n, "line") for n in (0, 1, 2)] == ["0 lines", "1 line", "2 lines"]
    one = tmp_path / "one.json"
    one.write_text('[{"id": "a"}, ')
    broken = run_cli("convert", str(one), "-o", str(tmp_path / "o.jsonl"))
    assert "(1 complete record before it)" in broken.stderr
    # no payload was written before the break: that partial file is gone and not named; the
    # rejected record is, and its partial file is named
    assert "o.jsonl.partial" not in broken.stderr and not (tmp_path / "o.jsonl.partial").exists()
    assert "o.rejects.jsonl.partial" in broken.stderr
