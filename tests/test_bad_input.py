"""Every bad input: one line naming the file, the record index and the exact byte offset,
exit 3, nothing under a final name. Each class deep in a large file and across the read
boundaries of both the parser (64 KiB) and the checking child process (1 MiB)."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from owui_replay.cli import main
from owui_replay.errors import ExitCode
from owui_replay.json_scan import DEPTH_LIMIT
from tests.helpers import REAL_EXPORT, ROOT, run_cli

RECORDS = json.loads(REAL_EXPORT.read_text())
TEMPLATE = next(r for r in RECORDS if r.get("snapshot"))
PARSER_CHUNK, CHILD_BLOCK = 64 * 1024, 1 << 20


def big_export(records: int = 250) -> bytes:
    """~2 MB: a real record again and again, with distinct ids."""
    items = []
    for i in range(records):
        item = json.loads(json.dumps(TEMPLATE))
        item["id"] = f"rec-{i:05d}"
        items.append(item)
    return json.dumps(items, indent=1).encode()


def inject(data: bytes, token: bytes, boundary: int, marker: bytes = b'"version": 0') -> tuple:
    """Put TOKEN in place of the version number of the first record whose number straddles or
    follows BOUNDARY; returns (data, offset of TOKEN's first byte, that record's index)."""
    start = data.find(marker, boundary - len(marker))
    offset = start + len(b'"version": ')
    bad = data[:offset] + token + data[offset + 1 :]
    index = data[:offset].count(b'"rec-')
    return bad, offset, index - 1


def inside_a_string(data: bytes, boundary: int) -> int:
    """An offset inside a message's text at or just before BOUNDARY (so that what is put there
    straddles it)."""
    marker = b'"content": "'
    return data.find(marker, max(0, boundary - len(marker) - 2)) + len(marker)


def convert(
    tmp_path: Path,
    data: bytes,
    name: str = "export.json",
    stdin: bool = False,
    *,
    own_process: bool = False,
    reads: tuple[int, ...] = (),
) -> tuple[int, str, Path]:
    """Run `owui-replay convert` on DATA (a file, or stdin): (exit code, stderr, output path).

    In this process by default, through the CLI's main() with stdin replaced, so that a
    mutation tool sees which tests reach the reader; own_process=True runs a real process
    (for what only a process can show: its peak memory). READS: stdin gives at most these
    many bytes per read, in turn (as a pipe may)."""
    export = tmp_path / name
    export.write_bytes(data)
    out = tmp_path / "out" / "feedback.jsonl"
    args = ["convert", "-" if stdin else str(export), "-o", str(out)]
    if own_process:
        peak = tmp_path / "peak-rss-kb"
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED, *args], input=data if stdin else None,
            capture_output=True, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PEAK_RSS_FILE": str(peak)},
        )  # fmt: skip
        return done.returncode, done.stderr.decode(), out

    stderr = io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(ShortReads(data if stdin else b"", reads))
    try:
        code = main(args, stdout=io.StringIO(), stderr=stderr)
    finally:
        sys.stdin = saved
    return code, stderr.getvalue(), out


# The CLI in a process that writes its own peak RSS (and its children's) to $PEAK_RSS_FILE at
# exit. Neither the test process's RUSAGE_CHILDREN (the largest child any earlier test ran) nor
# the child's own ru_maxrss (kept across exec, so a forked child starts at the size of the test
# process) measures convert: VmHWM belongs to the program that exec loaded.
_MEASURED = """
import atexit, os, resource, sys
def _peak():
    with open("/proc/self/status") as status:
        own = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    kb = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    with open(os.environ["PEAK_RSS_FILE"], "w") as f:
        f.write(str(kb))
atexit.register(_peak)
from owui_replay.cli import main
sys.exit(main(sys.argv[1:]))
"""


def peak_mb(tmp_path: Path) -> float:
    """The peak RSS of the last own_process run, in MB."""
    return int((tmp_path / "peak-rss-kb").read_text()) / 1024


class ShortReads(io.BufferedIOBase):
    """A pipe that hands over at most SIZES[0], SIZES[1], ... bytes per read."""

    def __init__(self, data: bytes, sizes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._sizes = sizes
        self._turn = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._sizes and size != 0:
            limit = self._sizes[self._turn % len(self._sizes)]
            self._turn += 1
            size = limit if size is None or size < 0 else min(size, limit)
        return self._data.read(size)


def assert_clean_failure(code: int, stderr: str, out: Path, where: str) -> None:
    assert code == ExitCode.BAD_INPUT, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and "unexpected" not in stderr
    assert where in stderr, stderr
    for name in ("feedback.jsonl", "feedback.rejects.jsonl", "feedback.manifest.json"):
        assert not (out.parent / name).exists()


BOUNDARIES = {"64KiB": PARSER_CHUNK, "1MiB": CHILD_BLOCK, "deep": 1_500_000}


@pytest.mark.parametrize("boundary", sorted(BOUNDARIES))
@pytest.mark.parametrize(
    ("token", "words"),
    [(b"18446744073709551616", "integer too large (more than 64 bits)"),
     (b"-9223372036854775809", "integer too large (more than 64 bits)"),
     (b"1e400", "number too large for a float (e.g. 1e400)"),
     (b"NaN", "NaN and Infinity are not JSON numbers")],
    ids=["overflow", "negative-overflow", "1e400", "nan"],
)  # fmt: skip
def test_a_bad_number_is_placed_exactly(
    tmp_path: Path, boundary: str, token: bytes, words: str
) -> None:
    data, offset, index = inject(big_export(), token, BOUNDARIES[boundary])
    code, stderr, out = convert(tmp_path, data)
    assert_clean_failure(code, stderr, out, f"byte offset {offset} in record index {index} ")
    assert f"before it): {words}; " in stderr


@pytest.mark.parametrize("boundary", sorted(BOUNDARIES))
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
@pytest.mark.parametrize(
    ("escape", "half"),
    [(b"\\ud800", "high"), (b"\\udbff", "high"), (b"\\udc00", "low"), (b"\\uDFFF", "low")],
    ids=["high", "high-last", "low", "low-upper"],
)  # fmt: skip
def test_a_lone_surrogate_escape_is_refused_whichever_half(
    tmp_path: Path, boundary: str, stdin: bool, escape: bytes, half: str
) -> None:
    data = big_export()
    at = inside_a_string(data, BOUNDARIES[boundary])
    bad = data[:at] + escape + data[at:]
    code, stderr, out = convert(tmp_path, bad, stdin=stdin)
    assert_clean_failure(code, stderr, out, f"byte offset {at}")
    assert f"the {half} half of a UTF-16 surrogate pair without its other half" in stderr


def test_a_surrogate_pair_and_an_escaped_backslash_are_fine(tmp_path: Path) -> None:
    data = big_export(3)
    at = inside_a_string(data, 0)
    data = data[:at] + b"pair \\ud83d\\ude00 text \\\\ud800 " + data[at:]
    code, stderr, _out = convert(tmp_path, data)
    assert code == 0, stderr


@pytest.mark.parametrize("boundary", sorted(BOUNDARIES))
@pytest.mark.parametrize(
    "bad",
    [b"\xc0\x80", b"\xff", b"\xed\xa0\x80", b"\xe2\x82"],
    ids=["overlong", "ff", "cesu", "cut"],
)
def test_invalid_utf8_is_placed_at_its_first_bad_byte(
    tmp_path: Path, boundary: str, bad: bytes
) -> None:
    data = big_export()
    at = inside_a_string(data, BOUNDARIES[boundary])
    broken = data[:at] + bad + b" " + data[at:]
    code, stderr, out = convert(tmp_path, broken)
    assert_clean_failure(code, stderr, out, f"byte offset {at} in record index")
    assert "invalid UTF-8: byte 0x" in stderr


@pytest.mark.parametrize(
    ("encoding", "offset"), [("utf-16-le", 1), ("utf-16-be", 0), ("utf-16", 0), ("utf-32-le", 1)]
)
def test_utf16_is_named(tmp_path: Path, encoding: str, offset: int) -> None:
    data = REAL_EXPORT.read_text("utf-8").encode(encoding)
    code, stderr, out = convert(tmp_path, data)
    assert_clean_failure(code, stderr, out, f"byte offset {offset}: UTF-16 text, not UTF-8")


@pytest.mark.parametrize("stdin", [False, True], ids=["file-child-checks", "stdin-in-process"])
@pytest.mark.parametrize("depth", [DEPTH_LIMIT + 1, 5_000, 50_000])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'], ids=["arrays", "objects"])
def test_deep_nesting_is_refused_with_memory_bounded(
    tmp_path: Path, stdin: bool, depth: int, opener: bytes
) -> None:
    closer = b"]" if opener == b"[" else b"}"
    deep = opener * depth + b"1" + closer * depth
    records = big_export(30)
    boundary = records.find(b'"snapshot"', PARSER_CHUNK)
    data = records[:boundary] + b'"deep": ' + deep + b", " + records[boundary:]
    code, stderr, out = convert(tmp_path, data, stdin=stdin, own_process=True)
    peak = peak_mb(tmp_path)
    index = data[:boundary].count(b'"id": "rec-') - 1
    assert_clean_failure(code, stderr, out, f"in record index {index} ")
    assert f"nested deeper than {DEPTH_LIMIT} levels" in stderr
    # the bracket named is the one that went past the limit, the same by file and by stdin:
    # the top-level array and the record are two levels, and the limit allows two more
    # (a page's {"items": [...]} around the array), so the run's 513th opener
    first = boundary + len(b'"deep": ')
    named = int(stderr.split("byte offset ")[1].split()[0])
    assert named == first + DEPTH_LIMIT * len(opener), (first, named)
    assert peak < 200, f"peak RSS {peak:.0f} MB"  # at 50,000 levels ijson alone takes GBs


def test_nesting_at_the_limit_is_accepted(tmp_path: Path) -> None:
    deep = b"[" * (DEPTH_LIMIT - 3) + b"1" + b"]" * (DEPTH_LIMIT - 3)
    records = big_export(3)
    at = records.find(b'"snapshot"')
    code, stderr, _ = convert(tmp_path, records[:at] + b'"deep": ' + deep + b", " + records[at:])
    assert code == 0, stderr  # and the rejects writer copes with it


@pytest.mark.parametrize("position", ["start", "middle"])
def test_a_corrupt_gzip_is_one_line(tmp_path: Path, position: str) -> None:
    blob = bytearray(gzip.compress(big_export(20), mtime=0))
    blob[10 if position == "start" else len(blob) // 2] ^= 0xFF
    code, stderr, out = convert(tmp_path, bytes(blob), name="export.json.gz")
    assert_clean_failure(code, stderr, out, "export.json.gz: ")
    assert "uncompressed byte offset" in stderr and "record index" in stderr


def test_a_truncated_gzip_is_one_line(tmp_path: Path) -> None:
    blob = gzip.compress(big_export(20), mtime=0)
    code, stderr, out = convert(tmp_path, blob[: len(blob) // 2], name="export.json.gz")
    assert_clean_failure(code, stderr, out, "export.json.gz: ")


@pytest.mark.parametrize("how", ["same-path", "symlink", "hardlink", "rejects", "manifest"])
def test_no_output_may_be_the_export_itself(tmp_path: Path, how: str) -> None:
    export = tmp_path / "same.json"
    export.write_bytes(REAL_EXPORT.read_bytes())
    target = {"same-path": export, "symlink": tmp_path / "link.jsonl",
              "hardlink": tmp_path / "hard.jsonl", "rejects": tmp_path / "x.rejects.jsonl",
              "manifest": tmp_path / "x.manifest.json"}[how]  # fmt: skip
    if how == "symlink":
        target.symlink_to(export)
    elif how in ("hardlink", "rejects", "manifest"):
        os.link(export, target)
    output = tmp_path / "x.jsonl" if how in ("rejects", "manifest") else target
    code, stderr, _ = convert_cli(export, output)
    assert code == ExitCode.USAGE and "is the export" in stderr and stderr.count("\n") == 1
    assert export.read_bytes() == REAL_EXPORT.read_bytes()


@pytest.mark.parametrize("form", ["trailing-slash", "existing-folder"])
def test_an_output_folder_is_a_usage_error_before_any_work(tmp_path: Path, form: str) -> None:
    folder = tmp_path / "outdir"
    if form == "existing-folder":
        folder.mkdir()
    output = str(folder) + ("/" if form == "trailing-slash" else "")
    code, stderr, _ = convert_cli(REAL_EXPORT, Path(output) if form != "trailing-slash" else output)
    assert code == ExitCode.USAGE and "is a folder" in stderr
    assert not list(tmp_path.glob("**/*.jsonl*"))


def convert_cli(export: Path, output) -> tuple[int, str, str]:
    from tests.helpers import run_cli

    run = run_cli(
        "convert", str(export), "-o", str(output) if not isinstance(output, str) else output
    )
    return run.code, run.stderr, run.stdout


def test_the_final_names_appear_all_together_or_not_at_all(tmp_path: Path) -> None:
    from owui_replay.convert_sinks import FileSink
    from owui_replay.errors import InputError
    from owui_replay.handoff import HandoffPaths

    paths = HandoffPaths.for_output(tmp_path / "f.jsonl")
    sink = FileSink(paths)
    try:
        sink.payload(b"{}\n")
        paths.manifest.mkdir()  # the last rename would fail
        with pytest.raises(InputError, match="is a folder"):
            sink.commit({})
    finally:
        sink.close_quietly()  # as Converter.run does after a failed commit
    assert not paths.output.exists() and not paths.rejects.exists()


def test_ctrl_c_names_the_partial_files_it_leaves(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    with subprocess.Popen(
        [sys.executable, "-m", "owui_replay", "convert", "-", "-o", str(out)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as process:  # fmt: skip
        data = big_export(40)
        assert process.stdin is not None
        process.stdin.write(data[: len(data) // 2])
        process.stdin.flush()
        partial = tmp_path / "f.jsonl.partial"
        deadline = time.monotonic() + 20
        while not (partial.exists() and partial.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)  # stdin stays open: the parser must not see its end first
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert stderr.count("\n") == 1 and str(partial) in stderr
    for left in tmp_path.glob("*.partial"):  # what is left is named, and nothing empty is left
        assert left.stat().st_size > 0 and str(left) in stderr
    assert not out.exists()


@pytest.mark.parametrize("records", [1, 250], ids=["fails-at-close", "fails-while-writing"])
def test_a_full_disk_is_named_and_nothing_is_committed(tmp_path: Path, records: int) -> None:
    """A small output fails when it is flushed at the end, a large one while lines are
    written: either way the error names the file and no output appears under its name."""
    if not Path("/dev/full").exists():
        pytest.fail("this test needs /dev/full (Linux)")
    export = tmp_path / "export.json"
    export.write_bytes(big_export(records))
    out = tmp_path / "f.jsonl"
    (tmp_path / "f.jsonl.partial").symlink_to("/dev/full")
    result = run_cli("convert", str(export), "-o", str(out))
    assert result.code == ExitCode.ERROR, result.stderr
    assert result.stderr.startswith(f"owui-replay: error: {out}.partial: No space left on device")
    assert result.stderr.count("\n") == 1
    assert not out.exists()
