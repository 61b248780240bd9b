"""README, --help and .ci/run tell the truth about each other and about the code."""

from __future__ import annotations

import argparse
import re
from importlib import metadata

import pytest

from owui_replay.cli import build_parser
from owui_replay.errors import ExitCode
from tests.helpers import ROOT, run_cli

README = (ROOT / "README.md").read_text("utf-8")


def readme_test_command() -> str:
    block = README.split("<!-- test-command -->", 1)[1]
    return re.search(r"```sh\n(.+?)\n```", block, re.S).group(1).strip()  # type: ignore[union-attr]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text("utf-8").strip().splitlines()
    assert ci[-1] == readme_test_command()


def test_first_screen_has_both_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:30])
    assert "owui-replay convert fixtures/" in first_screen
    assert readme_test_command() in first_screen


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_option_is_documented(command: str) -> None:
    for action in subcommands()[command]._actions:
        for flag in action.option_strings:
            if flag in ("-h", "--help"):
                continue
            assert f"`{flag}" in README or f", {flag}" in README, f"{command} {flag} not in README"


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_help_has_an_example(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0 and f"owui-replay {command} " in result.stdout.split("example:\n")[1]


def test_exit_codes_are_documented() -> None:
    table = README.split("## Exit codes", 1)[1]
    for code in ExitCode:
        assert f"| {int(code)} |" in table, code


def test_schemas_ship_inside_the_installed_distribution() -> None:
    files = {str(f) for f in metadata.files("owui-replay") or []}
    for name in ("openwebui-feedback.schema.json", "portkey-feedback.schema.json"):
        assert f"owui_replay/schemas/{name}" in files, "install with `pip install .`, not -e"
