"""Helpers the tests share: run the CLI in-process with captured streams, set environment
variables for a block, and locate the fixtures. (Fixtures themselves live in conftest.py.)"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """One in-process run of the CLI: its exit code and what it printed."""

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


class FakeClock:
    """A clock for pacing tests: time moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def descriptors_open_on(path: Path) -> int:
    """How many of this process's file descriptors refer to PATH (Linux /proc): a file a
    refused constructor left open shows here, on every Python."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the descriptor listdir itself used, closed since
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count
