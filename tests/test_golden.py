"""The fixtures' outputs match the golden files byte for byte, and a rerun is identical.

To regenerate after an intended change: OWUI_REPLAY_UPDATE_GOLDEN=1 pytest tests/test_golden.py,
then read the diff of fixtures/*/expected before committing it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, run_cli

CASES = [
    ("openwebui-0.12.4", "export.json", "feedback"),
    ("openwebui-0.12.4", "user-page1.json", "user-page1"),
    ("flat", "export.json", "feedback"),
    ("edge-cases", "export.json", "feedback"),
]
SUFFIXES = (".jsonl", ".rejects.jsonl", ".manifest.json")


@pytest.mark.parametrize(("folder", "export", "stem"), CASES)
def test_outputs_match_golden_files(tmp_path: Path, folder: str, export: str, stem: str) -> None:
    expected = FIXTURES / folder / "expected"
    result = run_cli(
        "convert", str(FIXTURES / folder / export), "-o", str(tmp_path / f"{stem}.jsonl")
    )
    assert result.code == 0, result.stderr
    if os.environ.get("OWUI_REPLAY_UPDATE_GOLDEN") == "1":
        expected.mkdir(exist_ok=True)
        for suffix in SUFFIXES:
            shutil.copyfile(tmp_path / (stem + suffix), expected / (stem + suffix))
    for suffix in SUFFIXES:
        got = (tmp_path / (stem + suffix)).read_bytes()
        assert got == (expected / (stem + suffix)).read_bytes(), f"{stem}{suffix} differs"


@pytest.mark.parametrize(("folder", "export", "stem"), CASES)
def test_rerun_is_byte_identical(tmp_path: Path, folder: str, export: str, stem: str) -> None:
    outputs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        out = tmp_path / run / f"{stem}.jsonl"
        assert run_cli("convert", str(FIXTURES / folder / export), "-o", str(out)).code == 0
        outputs.append([(tmp_path / run / (stem + s)).read_bytes() for s in SUFFIXES])
    assert outputs[0] == outputs[1]
