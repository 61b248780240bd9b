"""download's completeness check: whatever the array and however the body is cut into chunks,
a whole array is counted exactly and anything cut short, or followed by more, is refused."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owui_replay.array_shape import ArrayShape
from owui_replay.errors import InputError

# strings heavy in what the scan must get right: quotes, backslashes, brackets and commas
TRICKY = st.text(alphabet=st.sampled_from('"\\[]{},: ab\n\u00e9\u4e2d\U0001f600/u'), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=20,
)


def _text(array: list[Any], indent: int | None, ascii_only: bool) -> bytes:
    return json.dumps(array, indent=indent, ensure_ascii=ascii_only).encode()


def _feed(body: bytes, cuts: list[int]) -> ArrayShape:
    shape = ArrayShape("body")
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    for begin, end in itertools.pairwise(points):
        shape.feed(body[begin:end])
    return shape


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    st.lists(VALUES, max_size=6),
    st.lists(st.integers(min_value=0), max_size=8),
    st.sampled_from([None, 0, 2]),
    st.booleans(),
)
def test_a_whole_array_is_counted_exactly_whatever_the_chunks(
    array: list[Any], cuts: list[int], indent: int | None, ascii_only: bool
) -> None:
    body = _text(array, indent, ascii_only) + b"\n"
    assert _feed(body, cuts).finish() == len(array)


@SETTINGS
@given(st.lists(VALUES, min_size=1, max_size=6), st.integers(min_value=0), st.data())
def test_a_body_cut_anywhere_before_its_last_bracket_is_refused(
    array: list[Any], at: int, data: st.DataObject
) -> None:
    body = _text(array, 1, False)
    cut = at % (len(body) - 1) + 1  # keeps at least the '[' and loses at least the ']'
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=4))
    shape = _feed(body[:cut], cuts)
    with pytest.raises(InputError, match=r"^body: the body ends at byte offset \d+ .*cut short"):
        shape.finish()


@SETTINGS
@given(st.lists(VALUES, max_size=4), st.sampled_from([b"x", b"]", b"[]", b',{"a":1}', b"\\"]))
def test_more_data_after_the_array_is_refused(array: list[Any], extra: bytes) -> None:
    body = _text(array, None, True)
    with pytest.raises(InputError, match=f"byte offset {len(body) + 1}: more data after"):
        _feed(body + b" " + extra, [len(body) - 1, len(body) + 1]).finish()


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b"[]", 0),
        (b" \n[ \n ] \n", 0),
        (b"\xef\xbb\xbf[1]", 1),
        (b"[1, 2 ,3]", 3),
        (b'["a,b", {"x": "]"}, ["\\\\", "\\""]]', 3),
        (b'[{"a": "\\\\\\"]"}]', 1),
    ],
)
def test_counts(body: bytes, count: int) -> None:
    for size in (1, 2, 3, len(body)):
        shape = ArrayShape("body")
        for start in range(0, len(body), size):
            shape.feed(body[start : start + size])
        assert shape.finish() == count, size


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body: the body is empty (no JSON value)"),
        (b"  \n", "body: the body is empty (no JSON value)"),
        (b' {"items": []}', "body: byte offset 1: the body starts with a JSON object, not"),
        (b"<html>", "body: byte offset 0: the body starts with '<', not the export's array"),
        (b'[{"a": "b', "body: the body ends at byte offset 9 inside a string, after 0 complete"),
        (
            b'[{"a": 1}, {"b": [',
            "body: the body ends at byte offset 18 with 3 brackets still open, "
            "after 1 complete element",
        ),
        (b"[1]]", "body: byte offset 3: more data after the array closed at byte offset 2"),
    ],
)
def test_what_is_refused_says_where(body: bytes, message: str) -> None:
    shape = ArrayShape("body")
    with pytest.raises(InputError) as caught:
        shape.feed(body)
        shape.finish()
    assert str(caught.value).startswith(message)
