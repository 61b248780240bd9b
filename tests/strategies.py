"""Hypothesis strategies for Open WebUI feedback records: valid, nearly valid and broken."""

from __future__ import annotations

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
