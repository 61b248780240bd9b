"""report split across worker processes (report_scan): the page is the one the single pass
writes, a bad line is named as verify names it, and the byte ranges cut at line ends."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from owui_replay.errors import ExitCode
from owui_replay.feedback_file import scan_feedback
from owui_replay.report import make_report
from owui_replay.report_data import Leaving
from owui_replay.report_scan import MIN_PARALLEL_BYTES, scan_parallel, split
from tests.helpers import REAL_EXPORT, read_jsonl, run_cli

TEXTS = [
    "fine",
    "too long, see https://intranet.example/wiki/Page?id=7",
    "mail me at jane.doe@example.org",
    "call +44 20 7946 0958 after 5",
    "Résumé parfait — ✅ 日本語 👍",
    "my key sk-abcdefghijklmnop1234 leaked",
    "<script>alert(1)</script>",
]


def big_handoff(folder: Path, lines: int = 3000) -> Path:
    """A converted handoff grown to LINES varied lines (shapes, models, days, free text with
    and without personal data, withdrawals), its manifest made to match so every check
    passes."""
    feedback = folder / "feedback.jsonl"
    converted = run_cli("convert", str(REAL_EXPORT), "-o", str(feedback), "-q")
    assert converted.code == 0, converted.stderr
    templates = read_jsonl(feedback)
    rng = random.Random(23)
    with open(feedback, "wb") as out:
        for number in range(lines):
            payload = copy.deepcopy(rng.choice(templates))
            metadata: dict[str, Any] = payload["metadata"]
            metadata["feedback_id"] = f"fb-{number}"
            metadata["model_id"] = f"model-{rng.randrange(7)}"
            metadata["updated_at"] = str(1795000000 + rng.randrange(40 * 86400))
            if rng.random() < 0.6:
                metadata["comment"] = f"{rng.choice(TEXTS)} #{rng.randrange(50)}"
            if rng.random() < 0.01:
                metadata["withdrawn"] = "true"
            if rng.random() < 0.1:
                metadata.pop("tags", None)
            payload["value"] = rng.choice((1, -1, 1, 0))
            out.write(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
            out.write(b"\n")
    manifest_path = feedback.with_name("feedback.manifest.json")
    manifest = json.loads(manifest_path.read_text("utf-8"))
    data = feedback.read_bytes()
    manifest["output"].update(sha256=hashlib.sha256(data).hexdigest(), lines=lines, bytes=len(data))
    counts = manifest["counts"]
    counts["records"] += lines - counts["written"]
    counts["written"] = lines
    manifest_path.write_text(json.dumps(manifest), "utf-8")
    return feedback


def undated(page: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "", page)


def test_a_report_split_across_workers_is_the_single_pass_report(tmp_path: Path) -> None:
    feedback = big_handoff(tmp_path)
    assert len(split(feedback, 3)) == 3
    single = make_report(feedback, tmp_path / "single.html", rows=500, workers=1)
    several = make_report(feedback, tmp_path / "split.html", rows=500, workers=3, min_parallel=0)
    assert single.ok and several.ok
    assert (single.lines, single.personal_data) == (several.lines, several.personal_data)
    assert single.personal_data > 500  # findings in every part, and more than the rows shown
    one = (tmp_path / "single.html").read_text("utf-8")
    assert undated(one) == undated((tmp_path / "split.html").read_text("utf-8"))
    assert "withdraw a rating" in one
    # the split pass really ran (not the fallback), and its counts are the single pass's
    sequential = Leaving(rows=500)
    scanned = scan_feedback(feedback, sequential.visit)
    result = scan_parallel(feedback, 1, -1, 500, 3)
    assert result is not None
    split_scanned, merged = result
    assert split_scanned == scanned
    sequential.finish()
    for name in ("values", "models", "days", "raters", "keys", "text_by_key", "pii_matches",
                 "pii_lines", "pii_keys", "text_rows", "pii_rows", "withdrawn_rows"):  # fmt: skip
        assert list(getattr(merged, name)) == list(getattr(sequential, name)), name
        assert getattr(merged, name) == getattr(sequential, name), name
    assert len(merged.pii_rows) == 500 and merged.pii_rows[-1].line > 1000  # from a later part


def test_a_bad_line_in_a_later_part_is_named_as_the_single_pass_names_it(
    tmp_path: Path,
) -> None:
    feedback = big_handoff(tmp_path, 1200)
    lines = feedback.read_bytes().splitlines(keepends=True)
    lines[1100] = b'{"trace_id": "t", "value": "up"}\n'
    feedback.write_bytes(b"".join(lines))
    single = make_report(feedback, tmp_path / "single.html", workers=1)
    several = make_report(feedback, tmp_path / "split.html", workers=3, min_parallel=0)
    assert not single.ok and not several.ok
    page = (tmp_path / "split.html").read_text("utf-8")
    assert undated(page) == undated((tmp_path / "single.html").read_text("utf-8"))
    assert "line 1101" in page and "The lines could not all be read" in page


def test_byte_ranges_cover_the_file_and_end_after_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(b"x" * (n % 37) + b"\n" for n in range(500)))
    for parts in (1, 2, 3, 7):
        ranges = split(path, parts)
        assert len(ranges) == parts
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        data = path.read_bytes()
        for (_start, end), (start, _end) in itertools.pairwise(ranges):
            assert end == start and data[end - 1 : end] == b"\n"
    path.write_bytes(b"y" * 10_000 + b"\n" + b"z\n")  # one long line: fewer parts
    assert split(path, 4) == [(0, 10_001), (10_001, 10_003)]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is PID (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_while_workers_read_ends_them_at_once_without_a_traceback(
    tmp_path: Path,
) -> None:
    feedback = tmp_path / "feedback.jsonl"
    converted = run_cli("convert", str(REAL_EXPORT), "-o", str(feedback), "-q")
    assert converted.code == 0, converted.stderr
    line = feedback.read_bytes().splitlines(keepends=True)[0]
    feedback.write_bytes(line * (MIN_PARALLEL_BYTES // len(line) + 1000))  # split, ~3 s a worker
    process = subprocess.Popen(
        [sys.executable, "-m", "owui_replay", "report", str(feedback), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal makes for Ctrl-C
    )
    try:
        deadline = time.monotonic() + 30
        while len(workers := children_of(process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # two workers and multiprocessing's resource tracker
        assert len(workers) >= 3 and process.poll() is None
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGINT)
        _out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == ExitCode.INTERRUPTED
    assert err.decode() == "owui-replay: interrupted\n"
    deadline = time.monotonic() + 5  # the workers at once; the tracker once its pipe closes
    while (left := [p for p in workers if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in left if "spawn_main" in command_line(p)]
    assert not left


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
