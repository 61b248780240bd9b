"""The version is written once and every format carries a number of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import owui_replay
from owui_replay._version import __version__
from tests.helpers import ROOT


def test_the_cli_reports_the_installed_distributions_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "owui_replay", "-V"], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == f"owui-replay {metadata.version('owui-replay')}"
    assert owui_replay.__version__ == __version__ == metadata.version("owui-replay")


def test_the_version_number_is_written_in_one_place_only() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert "owui_replay._version.__version__" in pyproject
    holders = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "owui_replay").rglob("*.py")
        if re.search(r"""["']\d+\.\d+\.\d+["']""", path.read_text("utf-8"))
    ]
    assert holders == ["owui_replay/_version.py"]


def test_no_module_inside_the_package_imports_the_package_root() -> None:
    for path in (ROOT / "owui_replay").rglob("*.py"):
        text = path.read_text("utf-8")
        assert not re.search(r"^\s*from owui_replay import ", text, re.M), path.name


def test_the_changelog_opens_with_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text("utf-8")
    first = re.search(r"^## (\S+)", changelog, re.M)
    assert first is not None and first.group(1) == __version__
