"""Issue 19: the checks before the parser (json_scan) give the same verdict, and the same
offset for bad input, however the text is cut into blocks: by file (the checking child), by
stdin (in process, short reads), gzipped. Tests cut it into blocks of a few bytes, so that
every token (an escape, a number, a string, a bracket inside a string) straddles some
boundary; the production sizes stay as they are."""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owui_replay import export_reader, json_scan
from owui_replay.errors import ExitCode
from owui_replay.json_scan import DEPTH_LIMIT, Vetter
from tests.strategies import block_sizes, records, serialisations, tricky_text, write_json
from tests.test_bad_input import CHILD_BLOCK, big_export, convert, inside_a_string

PAIR = b"\\ud83d\\udc0d"  # U+1F40D as json.dump writes it


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_a_surrogate_pair_just_before_a_1mib_boundary_converts(tmp_path: Path, stdin: bool) -> None:
    """The issue's shape: the pair starts 13-18 bytes before the boundary (ends 1-6 before);
    main refused each with 'the escape \\udc0d is the low half ... without its other half'."""
    data = big_export(135)
    assert len(data) > CHILD_BLOCK + 4096
    at = inside_a_string(data, CHILD_BLOCK - 3000)
    for before in range(12, 20):
        filler = b"x" * (CHILD_BLOCK - before - at)
        export = data[:at] + filler + PAIR + data[at:]
        assert export.index(PAIR, at) == CHILD_BLOCK - before
        (tmp_path / str(before)).mkdir()
        code, stderr, _ = convert(tmp_path / str(before), export, stdin=stdin)
        assert code == ExitCode.OK, (before, stderr)


@contextlib.contextmanager
def blocks(reads: tuple[int, ...], child: tuple[int, ...]) -> Iterator[None]:
    """Reads handed to the parser of READS bytes in turn, and blocks of CHILD bytes in the
    checking child (production sizes again afterwards)."""
    saved = export_reader.READ_SIZES, json_scan.BLOCK_SIZES
    export_reader.READ_SIZES, json_scan.BLOCK_SIZES = reads, child  # (stdin reads: ShortReads)
    try:
        yield
    finally:
        export_reader.READ_SIZES, json_scan.BLOCK_SIZES = saved


def outcome(folder: Path, data: bytes, stdin: bool, reads: tuple[int, ...] = ()) -> tuple:
    """(exit code, JSONL, rejects, stderr) of convert on DATA."""
    folder.mkdir()
    code, stderr, out = convert(folder, data, stdin=stdin, reads=reads)
    rejects = out.with_name("feedback.rejects.jsonl")
    written = (out.read_bytes(), rejects.read_bytes()) if out.exists() else (None, None)
    return code, *written, stderr


SPLITS = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@SPLITS
@given(
    batch=st.lists(records(), min_size=1, max_size=5),
    tricky=st.dictionaries(tricky_text, tricky_text, max_size=4),
    data=st.data(),
    reads=block_sizes,
    child=block_sizes,
    zipped=st.booleans(),
)
def test_every_serialisation_and_split_converts_as_the_canonical_form(
    batch: list, tricky: dict, data: st.DataObject, reads: tuple, child: tuple, zipped: bool
) -> None:
    batch = [*batch, {"id": "tricky", "data": tricky}]  # rejected, so written out whole
    export: Any = {"items": batch, "total": len(batch)} if data.draw(st.booleans()) else batch
    text = data.draw(serialisations(export))
    assert json.loads(text.decode("utf-8-sig")) == export
    if zipped:
        text = gzip.compress(text, mtime=0)
    with tempfile.TemporaryDirectory() as tmp:
        code, jsonl, rejects, stderr = outcome(
            Path(tmp) / "canonical", json.dumps(export).encode(), False
        )
        assert code == ExitCode.OK, stderr
        with blocks(reads, child):
            for stdin in (False, True):
                got = outcome(Path(tmp) / f"split-{stdin}", text, stdin, reads)
                assert got[:3] == (code, jsonl, rejects), got[3]


# (before the bad bytes, the bad bytes, after them, what the error line says), in a record
DEEP = b'{"d": "[[{\\"", "e": ' + b"[" * (DEPTH_LIMIT - 1) + b'{"x":'  # brackets in a string too
DEFECTS = [
    (b'{"t": "ab', b"\\ud83d", b'x"}', "the high half of a UTF-16 surrogate pair"),
    (b'{"t": "ab', b"\\uDBFF", b'"}', "the high half of a UTF-16 surrogate pair"),
    (b'{"t": "', b"\\ud83d\\uD83D\\udc0d", b'"}', "the high half of a UTF-16 surrogate pair"),
    (b'{"t": "', b"\\udc0d", b'"}', "the low half of a UTF-16 surrogate pair"),
    (b'{"t": "\\\\\\\\', b"\\uDC00", b'"}', "the low half of a UTF-16 surrogate pair"),
    (b'{"t": "\\\\ud83d', b"\\udc0d", b'"}', "the low half of a UTF-16 surrogate pair"),
    (b'{"t": "a', b"\xed\xa0\xbd\xed\xb0\x8d", b'"}', "invalid UTF-8: byte 0xED"),
    (b'{"n": ', b"18446744073709551616", b"}", "integer too large (more than 64 bits)"),
    (b'{"n": [1, ', b"-9223372036854775809", b"]}", "integer too large (more than 64 bits)"),
    (b'{"n": ', b"1" * 45, b"}", "integer too large (more than 64 bits)"),
    (b'{"n": ', b"1e400", b"}", "number too large for a float (e.g. 1e400)"),
    (b'{"n": [', b"-0.5E+999", b"]}", "number too large for a float (e.g. 1e400)"),
    (b'{"n": ', b"NaN", b"}", "NaN and Infinity are not JSON numbers"),
    (b'{"n": [', b"-Infinity", b"]}", "NaN and Infinity are not JSON numbers"),
    (DEEP, b"[", b"1]" + b"]" * DEPTH_LIMIT + b"}}", f"nested deeper than {DEPTH_LIMIT} levels"),
]  # fmt: skip


@SPLITS
@given(
    batch=st.lists(records(), max_size=4),
    data=st.data(),
    defect=st.sampled_from(DEFECTS),
    reads=block_sizes,
    child=block_sizes,
    bom=st.booleans(),
    zipped=st.booleans(),
)
def test_every_invalid_variant_names_the_same_offset_whatever_the_split(
    batch: list, data: st.DataObject, defect: tuple, reads: tuple, child: tuple, bom: bool,
    zipped: bool
) -> None:  # fmt: skip
    rng = data.draw(st.randoms(use_true_random=False))
    items = [write_json(record, rng).encode() for record in batch]
    index = data.draw(st.integers(0, len(items)))
    before, bad, after, words = defect
    head = (b"\xef\xbb\xbf" if bom else b"") + b"[" + b"".join(i + b"," for i in items[:index])
    text = head + before + bad + after + b"".join(b"," + i for i in items[index:]) + b"]"
    offset = len(head + before)
    where = f"byte offset {offset} in record index {index} ({index} complete record"
    with tempfile.TemporaryDirectory() as tmp, blocks(reads, child):
        for stdin in (False, True):
            data_in = gzip.compress(text, mtime=0) if zipped else text
            code, jsonl, _, stderr = outcome(Path(tmp) / f"{stdin}", data_in, stdin, reads)
            assert code == ExitCode.BAD_INPUT and jsonl is None, stderr
            assert where in stderr and words in stderr, stderr


TOKENS = [b"\\", b"u", b"d", b"D", b"8", b"c", b"0", b'"', b"[", b"]", b"{", b"}", b"a", b" ",
          b"\\ud83d", b"\\udc0d", b"\\uDBFF", b"\\\\", b'\\"', b"\xed", b"\xa0"]  # fmt: skip


def vet(text: bytes, sizes: tuple[int, ...], depth: int) -> tuple[int, str] | None:
    vetter = Vetter(depth_limit=depth)
    position, turn = 0, 0
    while position < len(text):
        size = sizes[turn % len(sizes)]
        found = vetter.feed(text[position : position + size])
        if found is not None:
            return found.offset, found.reason
        position, turn = position + size, turn + 1
    return None


def deepest(text: bytes, limit: int) -> int | None:
    """The bracket that goes past LIMIT, walked byte by byte (a backslash escapes the next
    byte, in a string or not, as the Vetter reads it)."""
    depth, in_string, escape = 0, False, False
    for i, byte in enumerate(text):
        if escape:
            escape = False
            if byte in b'"\\':
                continue
        if byte == 0x5C:
            escape = True
        elif byte == 0x22:
            in_string = not in_string
        elif not in_string and byte in b"[]{}":
            depth += 1 if byte in b"[{" else -1
            if depth > limit:
                return i
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join), block_sizes)
def test_the_vetter_gives_the_same_answer_for_any_blocks(text: bytes, sizes: tuple) -> None:
    whole = vet(text, (len(text) + 1,), depth=1)
    assert vet(text, sizes, depth=1) == whole
    if whole is not None and "nested" in whole[1]:
        assert whole[0] == deepest(text, 3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"\\\\", b"\\n", b'\\"', b"\\u0041", b"\\ud83d", b"\\uDC0D",
                              b"\\uDBFF", b"\\udfff", b"\xf0\x9f\x90\x8d"]), max_size=12),
    block_sizes,
)  # fmt: skip
def test_a_string_is_refused_exactly_when_json_loads_gives_a_lone_surrogate(
    pieces: list[bytes], sizes: tuple
) -> None:
    text = b'["' + b"".join(pieces) + b'"]'
    value = json.loads(text)[0]
    lone = any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    found = vet(text, sizes, DEPTH_LIMIT)
    assert (found is not None) == lone
    if found is not None:  # at the first escape that is half of no pair
        assert text[found[0] : found[0] + 2] == b"\\u"


EDGES = [  # what json.loads reads (and holds no lone surrogate), in a record's fields
    b'{"id": "\\u0000\\u001f\\/\\"\\\\", "\\u0000": "\\ud800\\udc00\\uDBFF\\uDFFF\\uffff"}',
    b'{"id": "dup", "id": "last", "n": [-0, -0.0, 0e0, 1E+2, 1e-400, 1e308, -1.5e-3]}',
    b'{"n": [9223372036854775807, -9223372036854775807, 1.7976931348623157e308]}',
    b'{"s": "' + b"\\\\" * 41 + b'", "t": "' + b"\\ud83d\\udc0d" * 7 + b'\\\\\\ud83d\\udc0d"}',
    b'{"d": ' + b"[" * (DEPTH_LIMIT - 1) + b"{}" + b"]" * (DEPTH_LIMIT - 1) + b"}",
    b' \r\n\t{ "e" : [ ] , "o" : { } , "b" : [true,false,null] } \r\n',
    b'{"u": "' + "\u2028\u2029\ufeff\U0001f40d\x7f".encode() + b'"}',
]


@pytest.mark.parametrize("edge", EDGES, ids=range(len(EDGES)))
def test_what_json_loads_reads_converts_as_its_canonical_form(edge: bytes) -> None:
    export = b"[" + edge + b"," + edge + b"]"
    value = json.loads(export)
    with tempfile.TemporaryDirectory() as tmp:
        want = outcome(Path(tmp) / "canonical", json.dumps(value).encode(), False)
        assert want[0] == ExitCode.OK, want[3]
        for reads in [(), (1,), (5, 2, 7)]:
            with blocks(reads, reads or json_scan.BLOCK_SIZES):
                for stdin in (False, True):
                    got = outcome(Path(tmp) / f"{reads}-{stdin}", export, stdin, reads)
                    assert got[:3] == want[:3], got[3]
