"""The package ships its types and its schemas once; completion scripts load.

Lint, format and type checks are not tests: .ci/run and the pre-commit hooks run them.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, run_cli


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_the_package_ships_its_types_and_one_copy_of_the_schemas() -> None:
    assert (ROOT / "owui_replay" / "py.typed").is_file()
    packaged = ROOT / "owui_replay" / "schemas"
    assert packaged.is_symlink() and packaged.resolve() == (ROOT / "schemas").resolve()


def complete(words: list[str]) -> list[str]:
    script = run_cli("completion", "bash").stdout
    line = " ".join(f'"{w}"' for w in words)
    probe = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _owui_replay; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert not done.stderr
    return done.stdout.split()


def test_bash_completion_loads_and_completes() -> None:
    assert complete(["owui-replay", "sy"]) == ["sync"]
    assert complete(["owui-replay", "replay", "--retr"]) == ["--retries", "--retry-refused"]
    assert complete(["owui-replay", "replay", "--uncertain", ""]) == ["resend", "skip"]
    assert "--thumbs-down-value" in complete(["owui-replay", "sync", "--th"])


def test_zsh_and_fish_scripts_are_generated_from_the_parser() -> None:
    zsh = run_cli("completion", "zsh").stdout
    assert "bashcompinit" in zsh and "complete -o filenames -F _owui_replay owui-replay" in zsh
    fish = run_cli("completion", "fish").stdout
    assert "complete -c owui-replay -n '__fish_seen_subcommand_from replay' -l retry-refused" in (
        fish
    )
