"""Shared helpers: run the CLI in-process with captured streams, and locate fixtures."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owui_replay.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
REAL_EXPORT = FIXTURES / "openwebui-0.12.4" / "export.json"
FLAT_EXPORT = FIXTURES / "flat" / "export.json"
EDGE_EXPORT = FIXTURES / "edge-cases" / "export.json"


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for a with-block; restore exactly what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def load_fixture(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


@pytest.fixture
def real_records() -> list[dict[str, Any]]:
    return load_fixture(REAL_EXPORT)


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The default ledger lives under $XDG_STATE_HOME and the configuration under
    $XDG_CONFIG_HOME: never the real ones in tests."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("OWUI_REPLAY_CONFIG", raising=False)
    monkeypatch.delenv("OWUI_REPLAY_ALLOWED_SIGNERS", raising=False)
    return state
