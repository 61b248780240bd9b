"""Hypothesis strategies for Open WebUI feedback records: valid, nearly valid and broken."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

text = st.text(max_size=12)
ids = st.uuids().map(str)
maybe_text = st.one_of(st.none(), text)
epoch = st.integers(min_value=0, max_value=2_000_000_000)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    text,
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
junk = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=6,
)
ratings = st.one_of(
    st.sampled_from([1, -1, 0, "1", "-1", "0", " 1 ", None, 7, 10]),
    junk,  # anything at all: must be rejected or skipped, never crash
)


@st.composite
def messages(draw: Any, message_id: str | None) -> Any:
    ids_ = draw(st.lists(ids, max_size=4))
    if message_id and draw(st.booleans()):
        ids_.append(message_id)
    parents = [None, *ids_]
    msgs = {
        mid: {
            "id": mid,
            "parentId": draw(st.sampled_from(parents)),
            "role": "assistant",
            "content": draw(text),
            "extra": draw(junk),
        }
        for mid in ids_
    }
    if draw(st.booleans()):
        return list(msgs.values())
    return msgs


@st.composite
def records(draw: Any) -> Any:
    """Mostly well-formed records (some with one field broken), sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(junk)
    message_id = draw(st.one_of(st.none(), ids))
    chat_id = draw(st.one_of(st.none(), ids))
    record: dict[str, Any] = {
        "id": draw(ids),
        "user_id": draw(st.one_of(st.none(), ids)),
        "version": 0,
        "type": draw(st.sampled_from(["rating", "rating", "rating", "other"])),
        "data": {
            "rating": draw(ratings),
            "model_id": draw(maybe_text),
            "reason": draw(maybe_text),
            "comment": draw(st.one_of(st.none(), st.text(max_size=200))),
            "tags": draw(st.one_of(st.none(), st.lists(text, max_size=3))),
            "sibling_model_ids": draw(st.one_of(st.none(), st.lists(st.sampled_from(["a", "b"])))),
            "details": draw(
                st.one_of(
                    st.none(),
                    st.fixed_dictionaries({"rating": st.one_of(st.none(), st.integers(1, 10))}),
                )
            ),
        },
        "meta": {
            "chat_id": chat_id,
            "message_id": message_id,
            "message_index": draw(st.one_of(st.none(), st.integers(0, 20))),
            "model_id": draw(maybe_text),
            "arena": draw(st.one_of(st.none(), st.booleans())),
            "base_models": draw(st.dictionaries(text, maybe_text, max_size=2)),
        },
        "snapshot": draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {
                        "chat": st.fixed_dictionaries(
                            {
                                "id": st.just(chat_id or ""),
                                "chat": st.fixed_dictionaries(
                                    {
                                        "id": st.just(""),
                                        "history": st.fixed_dictionaries(
                                            {
                                                "messages": messages(message_id),
                                                "currentId": st.just(message_id),
                                            }
                                        ),
                                    }
                                ),
                            }
                        )
                    }
                ),
            )
        ),
        "created_at": draw(epoch),
        "updated_at": draw(epoch),
    }
    if draw(st.integers(0, 4)) == 0:  # break or drop one field
        key = draw(st.sampled_from(sorted(record)))
        if draw(st.booleans()):
            del record[key]
        else:
            record[key] = draw(junk)
    return record


# Valid re-serialisations: the same JSON value written as other writers write it.
BLANKS = ["", "", "", " ", "\n", "\r\n", "\t", "\r\n    ", "  "]
SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                 "\r": "\\r", "\t": "\\t"}  # fmt: skip


def escaped_char(char: str, rng: Any) -> str:
    """CHAR as it may appear inside a JSON string: itself (when allowed), a short escape, or
    \\u escapes (a surrogate pair beyond the BMP) with hex digits in either case."""
    code = ord(char)
    must = char in '"\\' or code < 0x20
    how = rng.randrange(1 if must else 0, 4)
    if how == 0 or (how == 1 and char not in SHORT_ESCAPES and not must):
        return char
    if how == 1 and char in SHORT_ESCAPES:
        return SHORT_ESCAPES[char]
    units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10),
                                          0xDC00 + ((code - 0x10000) & 0x3FF)]  # fmt: skip
    return "".join(
        "\\u" + "".join(rng.choice((c, c.upper())) for c in f"{unit:04x}") for unit in units
    )


def number_text(value: float, rng: Any) -> str:
    """A float as repr writes it, or the same number with an exponent (same double)."""
    if rng.random() < 0.5:
        return repr(value)
    from decimal import Decimal

    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    mark = rng.choice("eE") + (rng.choice(["", "+"]) if exponent >= 0 else "")
    return ("-" if sign else "") + "".join(map(str, digits)) + mark + str(exponent)


def write_json(value: Any, rng: Any) -> str:
    """VALUE in JSON, with random blanks between tokens and random escapes in strings (keys
    too): what json.loads reads back as VALUE."""

    def blank() -> str:
        return rng.choice(BLANKS)

    if isinstance(value, dict):
        members = [
            blank() + write_json(str(k), rng) + blank() + ":" + blank() + write_json(v, rng)
            for k, v in value.items()
        ]
        return "{" + ",".join(m + blank() for m in members) + blank() + "}"
    if isinstance(value, list):
        return "[" + ",".join(blank() + write_json(v, rng) + blank() for v in value) + "]"
    if isinstance(value, str):
        return '"' + "".join(escaped_char(c, rng) for c in value) + '"'
    if isinstance(value, float):
        return number_text(value, rng)
    return json.dumps(value)  # None, booleans, integers


@st.composite
def serialisations(draw: Any, value: Any) -> bytes:
    """VALUE written as some valid JSON text: json.dumps with an indent, or write_json; in
    UTF-8, maybe after a byte-order mark."""
    rng = draw(st.randoms(use_true_random=False))
    if draw(st.booleans()):
        text = json.dumps(value, indent=draw(st.sampled_from([None, 1, 2, 4])),
                          ensure_ascii=draw(st.booleans()))  # fmt: skip
        if draw(st.booleans()):
            text = text.replace("\n", "\r\n")
    else:
        text = write_json(value, rng)
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode("utf-8")


block_sizes = st.lists(st.integers(1, 48), min_size=1, max_size=4).map(tuple)
# text where escapes matter: quotes, backslashes, slashes, control characters, and characters
# beyond the BMP (a surrogate pair when escaped)
tricky_text = st.text(alphabet='a /"\\\n\t\x01é中\U0001f40d\U0001f600\U0010ffff', max_size=24)
