"""Build JSONL handoffs for replay tests, run replay in-process or as a real process, and
serve both stand-ins with the cookbook's variables pointing at them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from owui_replay.converting import dumps_line
from tests.helpers import ROOT, Run, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub


def make_feedback(directory: Path, count: int, name: str = "feedback.jsonl") -> Path:
    """COUNT distinct payloads (feedback ids fb-0000...) without a manifest."""
    path = directory / name
    with open(path, "wb") as handle:
        for i in range(count):
            handle.write(
                dumps_line(
                    {
                        "trace_id": f"chat-{i}:msg-{i}",
                        "value": 1 if i % 3 else -1,
                        "weight": 1,
                        "metadata": {"feedback_id": f"fb-{i:04d}", "_user": "u1"},
                    }
                )
            )
    return path


def replay_in_process(
    feedback: Path, url: str, *args: str, key: str = API_KEY, quiet: bool = True
) -> Run:
    """owui-replay replay in this process, with PORTKEY_API_KEY set for the call only."""
    with environment(PORTKEY_API_KEY=key):
        return run_cli(
            "replay", str(feedback), "--base-url", url, *(["--quiet"] if quiet else []), *args
        )


def replay_process(feedback: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PORTKEY_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "owui_replay", "replay", str(feedback), "--base-url", url, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def journal_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    return [json.loads(raw) for raw in lines if raw.strip() and raw.endswith(b"}")]


def uncertain_resent(stderr: str) -> int:
    """What a run announced it resends, said before it sent anything (so a killed run has
    said it too); the first mention, not the closing summary's repeat of it."""
    marker = "uncertain resent: "
    for line in stderr.splitlines():
        if marker in line:
            return int(line.split(marker, 1)[1].split()[0].rstrip(","))
    return 0


def serve(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records), "utf-8")
    return path


@contextmanager
def chain(tmp_path: Path, records: list[dict[str, Any]], **portkey: Any) -> Iterator[Any]:
    """Both stand-ins, and the cookbook's four environment variables pointing at them."""
    export = serve(tmp_path / "served.json", records)
    with (
        portkey_stub(**portkey) as pk,
        openwebui_stub(export_file=export) as owui,
        environment(
            OPENWEBUI_BASE_URL=owui.url,
            OPENWEBUI_TOKEN=ADMIN_TOKEN,
            PORTKEY_API_KEY=API_KEY,
            PORTKEY_BASE_URL=pk.url,
        ),
    ):
        yield pk, owui, export
