"""Reading exports: shapes, compression, stdin, and exactly where a broken file broke."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from owui_replay.errors import InputError
from owui_replay.export_reader import locate_parse_error, open_export
from tests.helpers import FIXTURES, REAL_EXPORT


def read_all(path: Path | str) -> tuple[list[object], object]:
    with open_export(str(path)) as stream:
        return list(stream.records()), stream


def write(tmp_path: Path, data: bytes, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_reads_the_real_export_and_hashes_every_byte() -> None:
    import hashlib

    stream = open_export(str(REAL_EXPORT))
    try:
        assert len(list(stream.records())) == 9
        raw = REAL_EXPORT.read_bytes()
        assert stream.raw.bytes_read == len(raw)
        assert stream.sha256() == hashlib.sha256(raw).hexdigest()
        assert stream.shape == "array"
    finally:
        stream.close()


def test_a_file_that_changes_while_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, REAL_EXPORT.read_bytes())
    stream = open_export(str(path))
    try:
        records = stream.records()
        next(records)
        stream.raw.digest._child.wait()  # type: ignore[union-attr]  # it hashed the whole file
        with open(path, "ab") as handle:
            handle.write(b"\n" * 10)  # appended while the parser is still reading
        assert len(list(records)) == 8
        with pytest.raises(InputError, match="changed while it was being read"):
            stream.sha256()
    finally:
        stream.close()


def test_stdin_is_hashed_in_line() -> None:
    code = (
        "import hashlib, sys\n"
        "from owui_replay.export_reader import open_export\n"
        "s = open_export('-'); n = sum(1 for _ in s.records())\n"
        "print(s.sha256() == hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(REAL_EXPORT)], input=REAL_EXPORT.read_bytes(),
        capture_output=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == b"True"


def test_reads_items_pages_and_their_total() -> None:
    records, stream = read_all(FIXTURES / "openwebui-0.12.4" / "user-page1.json")
    assert len(records) == 5 and stream.shape == "page" and stream.page_total == 5


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(REAL_EXPORT.read_bytes()), "export.json.gz")
    records, stream = read_all(path)
    assert len(records) == 9 and stream.compressed
    assert stream.raw.bytes_read == path.stat().st_size


def test_prefixed_reader_replays_the_sniffed_head() -> None:
    import io

    from owui_replay.export_reader import _Prefixed

    assert _Prefixed(b"abc", io.BytesIO(b"defg")).read() == b"abcdefg"
    reader = _Prefixed(b"abc", io.BytesIO(b"defg"))
    assert [reader.read(2), reader.read(2), reader.read(10), reader.read(1)] == [
        b"ab",
        b"cd",
        b"efg",
        b"",
    ]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    records, stream = read_all(write(tmp_path, b"\xef\xbb\xbf" + REAL_EXPORT.read_bytes()))
    assert len(records) == 9 and stream.bom


def test_floats_are_floats_not_decimals(tmp_path: Path) -> None:
    records, _ = read_all(write(tmp_path, b'[{"x": 0.5, "y": 10}]'))
    assert records == [{"x": 0.5, "y": 10}] and type(records[0]["x"]) is float  # type: ignore[index]


def test_stdin_is_read_with_dash(tmp_path: Path) -> None:
    code = (
        "from owui_replay.export_reader import open_export\n"
        "s = open_export('-'); print(sum(1 for _ in s.records()), s.raw.bytes_read)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=REAL_EXPORT.read_bytes(), capture_output=True,
        check=True,
    )  # fmt: skip
    assert done.stdout.split() == [b"9", str(REAL_EXPORT.stat().st_size).encode()]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n\t ", "the file is empty"),
        (b'"just a string"', "top-level JSON value starts with '\"'"),
        (b"42", "top-level JSON value starts with '4'"),
    ],
)
def test_files_that_are_not_exports_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(InputError, match=message) as caught:
        read_all(path)
    assert str(path) in str(caught.value)


def test_an_object_without_items_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no 'items' array"):
        read_all(write(tmp_path, b'{"detail": "Not authenticated"}'))


GOOD = b'[{"id":"a"},{"id":"b"},'  # two complete records, 23 bytes
TRAILING = "unexpected data after the end of the top-level value (trailing garbage)"


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (
            GOOD + b'{"id":"c", "x": ',
            len(GOOD) + 16,
            "the file ends in the middle of a record (truncated?)",
        ),
        (
            GOOD + b'{"id":"\xff\xfe"}]',
            len(GOOD) + 7,
            "invalid UTF-8: byte 0xFF (invalid start "
            "byte; an overlong or damaged sequence, or text in another encoding)",
        ),
        (GOOD + b'{"id":NaN}]', len(GOOD) + 6, "NaN and Infinity are not JSON numbers"),
        (GOOD + b'{"id":-Infinity}]', len(GOOD) + 6, "NaN and Infinity are not JSON numbers"),
        (GOOD + b'{"id":1' + b"0" * 400 + b"}]", None, "integer too large (more than 64 bits)"),
        (b'[{"id":"a"},{"id":"b"}] trailing', 24, TRAILING),
        (b'[{"id":"a"},{"id":"b"}]\n[{"id":"c"}]', 24, TRAILING),
    ],
)
def test_broken_files_name_the_record_and_byte_offset(
    tmp_path: Path, data: bytes, offset: int | None, reason: str
) -> None:
    path = write(tmp_path, data)
    seen = []
    with open_export(str(path)) as stream, pytest.raises(InputError) as caught:
        seen.extend(stream.records())
    message = str(caught.value)
    assert seen == [{"id": "a"}, {"id": "b"}]  # every complete record before the break
    assert "\n" not in message
    assert str(path) in message and "record index 2" in message
    assert message.endswith(f"(2 complete records before it): {reason}")  # the whole reason
    if offset is not None:
        assert f"byte offset {offset} " in message


def test_offsets_are_exact_deep_inside_a_large_file(tmp_path: Path) -> None:
    good = json.dumps([{"id": str(i), "pad": "x" * 5000} for i in range(300)]).encode()
    data = good[:-1] + b', {"id": NaN}]'
    bad_at = data.index(b"NaN")
    with (
        open_export(str(write(tmp_path, data))) as stream,
        pytest.raises(InputError, match=f"byte offset {bad_at} in record index 300"),
    ):
        list(stream.records())


@pytest.mark.parametrize("shift", range(-40, 41, 8))
def test_offsets_are_exact_across_chunk_boundaries(tmp_path: Path, shift: int) -> None:
    head = b'[{"id": "' + b"y" * (65536 + shift) + b'"},'
    data = head + b'{"id": NaN}]'
    at = data.index(b"NaN")
    with (
        open_export(str(write(tmp_path, data))) as stream,
        pytest.raises(InputError, match=f"byte offset {at} in record index 1"),
    ):
        list(stream.records())


def test_gzip_truncation_is_reported(tmp_path: Path) -> None:
    blob = gzip.compress(REAL_EXPORT.read_bytes())
    with (
        open_export(str(write(tmp_path, blob[: len(blob) // 2], "cut.json.gz"))) as stream,
        pytest.raises(InputError, match=r"truncated|ends early|malformed"),
    ):
        list(stream.records())


def test_unreadable_path_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        open_export(str(tmp_path / "missing.json"))


def test_locate_handles_undecodable_yajl_messages() -> None:
    class Fake:
        last_chunk = b'[{"b":"\xff"}]'
        last_chunk_start = 0
        offset = 12

    message = (
        "b'lexical error: invalid bytes in UTF8 string.\\n"
        '    ,{"b":"\\xff\\n  (right here) ------^\\n\''
    )
    reason, offset = locate_parse_error(message, Fake())  # type: ignore[arg-type]
    assert reason.startswith("invalid UTF-8: byte 0xFF (invalid start byte") and offset == 7


def test_close_reaps_the_hashing_child_and_closes_its_pipes(tmp_path: Path) -> None:
    path = write(tmp_path, REAL_EXPORT.read_bytes())
    for child_done in (False, True):
        stream = open_export(str(path))
        child = stream.raw.digest._child
        assert child is not None
        try:
            if child_done:  # it hashed the whole file and exited; its pipes stay open till read
                child.wait()
        finally:
            stream.close()
        assert child.returncode is not None
        assert child.stdout is not None and child.stdout.closed
        assert child.stderr is not None and child.stderr.closed
        assert stream.raw._raw.closed  # type: ignore[attr-defined]
        stream.close()  # twice is harmless
