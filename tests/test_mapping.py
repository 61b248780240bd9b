"""The mapping rules: one record in, one payload (or a Skip with a reason) out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from owui_replay.mapping import (
    Mapper,
    MappingOptions,
    Skip,
    find_history,
    flatten,
    parse_rating,
    template_fields,
    thread_length,
)


def by_id(records: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    return copy.deepcopy(next(r for r in records if r["id"].startswith(prefix)))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1, 1), (-1, -1), ("1", 1), ("-1", -1), (" -1 ", -1), ("0", 0), (0, 0), (1.0, 1),
     (None, None), (True, None), (False, None), ("up", None), ("", None), (1.5, None)],
)  # fmt: skip
def test_parse_rating_accepts_ints_and_numeric_strings_only(raw: Any, expected: Any) -> None:
    assert parse_rating(raw) == expected


def test_thumbs_map_to_configured_values(real_records: list[dict[str, Any]]) -> None:
    up, down = by_id(real_records, "410d052d"), by_id(real_records, "d22f37d6")
    default = Mapper()
    assert default.map(up)["value"] == 1
    assert default.map(down)["value"] == -1
    zero_down = Mapper(MappingOptions(down_value=0, up_value=5))
    assert zero_down.map(down)["value"] == 0
    assert zero_down.map(up)["value"] == 5


def test_string_rating_from_the_api_is_a_thumbs_down(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "a233507b")  # posted with rating "-1" by a non-UI client
    payload = Mapper(MappingOptions(missing_ids="feedback-id")).map(record)
    assert payload["value"] == -1


def test_trace_id_default_is_chat_and_message(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "410d052d")
    payload = Mapper().map(record)
    assert payload["trace_id"] == f"{record['meta']['chat_id']}:{record['meta']['message_id']}"
    assert payload["weight"] == 1


def test_trace_id_template_is_configurable(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "410d052d")
    payload = Mapper(MappingOptions(trace_template="owui-{message_id}")).map(record)
    assert payload["trace_id"] == "owui-" + record["meta"]["message_id"]


@pytest.mark.parametrize("bad", ["{nope}", "{chat_id!r}", "{chat_id:>5}", "constant", "{"])
def test_bad_templates_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match=r"template|field|malformed"):
        template_fields(bad)


def test_arena_rating_keeps_the_real_model(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "2daaba20")
    assert record["meta"]["arena"] is True
    metadata = Mapper().map(record)["metadata"]
    assert metadata["model_id"] == "my-model-config"
    assert metadata["meta.model_id"] == "arena-model"
    assert metadata["arena"] == "true"
    assert metadata["base_models.my-model-config"] == "/models/Llama-3.1-8B-Instruct"


def test_metadata_is_flat_strings_with_the_cookbook_extras(
    real_records: list[dict[str, Any]],
) -> None:
    record = by_id(real_records, "d22f37d6")
    metadata = Mapper().map(record)["metadata"]
    assert all(isinstance(v, str) and len(v) <= 128 for v in metadata.values())
    assert metadata["feedback_id"] == record["id"]
    assert metadata["_user"] == metadata["user_id"] == record["user_id"]
    assert metadata["snapshot_chat_id"] == record["snapshot"]["chat"]["id"]
    assert metadata["message_index"] == "4"
    assert metadata["updated_at"] == str(record["updated_at"])
    assert metadata["comment"] == 'Way too long; also "quotes", commas, and\nnewlines.'
    assert metadata["details.rating"] == "3"  # the 1-10 score is metadata, never the value
    assert "snapshot" not in metadata and not any(k.startswith("snapshot.") for k in metadata)


def test_null_and_empty_values_are_left_out(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "2daaba20")  # comment "", tags [], sibling_model_ids null
    metadata = Mapper().map(record)["metadata"]
    assert "comment" not in metadata and "tags" not in metadata
    assert "sibling_model_ids" not in metadata


def test_repeated_sibling_models_are_deduplicated() -> None:
    out: dict[str, str] = {}
    flatten("", {"sibling_model_ids": ["a", "b", "a", None], "n": {"x": 1.0, "y": False}}, out)
    assert out == {"sibling_model_ids": "a,b", "n.x": "1", "n.y": "false"}


def test_long_values_are_clipped_to_128_characters(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "410d052d")
    record["data"]["comment"] = "é" * 500
    comment = Mapper().map(record)["metadata"]["comment"]
    assert len(comment) == 128 and comment.endswith("…")


def test_drop_and_keep_metadata(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "d22f37d6")
    dropped = Mapper(MappingOptions(drop_metadata=("comment", "base_models.*"))).map(record)
    assert "comment" not in dropped["metadata"]
    assert not any(k.startswith("base_models.") for k in dropped["metadata"])
    kept = Mapper(MappingOptions(keep_metadata=("_user", "feedback_id"))).map(record)
    assert set(kept["metadata"]) == {"_user", "feedback_id"}


def test_extra_metadata_is_added(real_records: list[dict[str, Any]]) -> None:
    options = MappingOptions(extra_metadata=(("_environment", "production"),))
    assert Mapper(options).map(by_id(real_records, "410d052d"))["metadata"]["_environment"] == (
        "production"
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"type": "arena_vote"}, "not_a_rating"),
        ({"data": {"rating": 0}}, "not_a_thumb"),
        ({"data": {"rating": 8}}, "not_a_thumb"),
        ({"data": {}}, "no_rating"),
        ({"data": None}, "no_rating"),
        ({"data": {"rating": None}}, "no_rating"),
    ],
)
def test_non_thumb_records_are_skipped_with_a_reason(
    real_records: list[dict[str, Any]], change: dict[str, Any], code: str
) -> None:
    record = by_id(real_records, "410d052d") | change
    with pytest.raises(Skip) as caught:
        Mapper().map(record)
    assert caught.value.code == code


def test_missing_chat_id_is_rejected_not_unknown_chat(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "a233507b")  # no chat_id, no snapshot
    with pytest.raises(Skip) as caught:
        Mapper().map(record)
    assert caught.value.code == "missing_trace_field"
    payload = Mapper(MappingOptions(missing_ids="feedback-id")).map(record)
    assert payload["trace_id"] == f"{record['id']}:not-a-real-message"
    assert payload["metadata"]["trace_id_fallback"] == "chat_id=feedback_id"
    assert "unknown" not in payload["trace_id"]


def test_chat_id_falls_back_to_the_snapshot_never_the_inner_chat(
    real_records: list[dict[str, Any]],
) -> None:
    record = by_id(real_records, "410d052d")
    del record["meta"]["chat_id"]
    assert record["snapshot"]["chat"]["chat"]["id"] == ""  # the inner id is empty on real servers
    payload = Mapper().map(record)
    assert payload["trace_id"].startswith(record["snapshot"]["chat"]["id"] + ":")


def test_since_and_until_filter_on_updated_at(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "102353cd")  # updated_at 1795417830
    assert Mapper(MappingOptions(since=1795417830)).map(record)["value"] == 1
    with pytest.raises(Skip, match="before --since"):
        Mapper(MappingOptions(since=1795417831)).map(record)
    with pytest.raises(Skip, match="not before --until"):
        Mapper(MappingOptions(until=1795417830)).map(record)


def test_thread_walk_finds_the_index_and_survives_cycles() -> None:
    messages = {
        "u1": {"id": "u1", "parentId": None},
        "a1": {"id": "a1", "parentId": "u1"},
        "u2": {"id": "u2", "parentId": "a1"},
        "a2": {"id": "a2", "parentId": "u2"},
    }
    history = {"messages": messages}
    assert thread_length(history, "a2") == 4
    assert thread_length({"messages": list(messages.values())}, "a1") == 2
    assert thread_length(history, "gone") is None
    messages["u1"]["parentId"] = "a2"  # a damaged chat with a cycle
    assert thread_length(history, "a2") == 4


def test_history_is_found_in_nested_and_flat_snapshots() -> None:
    nested = {"chat": {"id": "c", "chat": {"id": "", "history": {"messages": {}}}}}
    flat = {"chat": {"id": "c"}, "history": {"messages": {"m": {}}}}
    assert find_history(nested) == {"messages": {}}
    assert find_history(flat) == {"messages": {"m": {}}}
    assert find_history(None) is None


def test_message_index_is_walked_when_meta_lacks_it(real_records: list[dict[str, Any]]) -> None:
    record = by_id(real_records, "d22f37d6")
    del record["meta"]["message_index"]
    assert Mapper().map(record)["metadata"]["message_index"] == "4"


# Gaps found by mutation testing (dev/mutate.py owui_replay/mapping.py ...): each test below
# pins a rule that a planted bug got through before.


def _rating(**overrides: Any) -> dict[str, Any]:
    """A minimal schema-shaped thumbs-up with a nested snapshot of two messages."""
    record: dict[str, Any] = {
        "id": "fb-1",
        "user_id": "u-1",
        "version": 0,
        "type": "rating",
        "data": {"rating": 1, "model_id": "data-model"},
        "meta": {"chat_id": "c-1", "message_id": "m-2", "model_id": "meta-model"},
        "snapshot": {
            "chat": {
                "id": "c-1",
                "chat": {
                    "history": {
                        "messages": {
                            "m-1": {"id": "m-1", "parentId": None},
                            "m-2": {"id": "m-2", "parentId": "m-1"},
                        }
                    }
                },
            }
        },
        "created_at": 1795392000,
        "updated_at": 1795392000,
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize(
    ("template", "expected"),
    [("{feedback_id}", "fb-1"), ("{user_id}", "u-1"), ("{model_id}", "data-model"),
     ("{message_index}", "2"), ("{chat_id}/{message_id}/{chat_id}", "c-1/m-2/c-1")],
)  # fmt: skip
def test_every_trace_field_has_its_value(template: str, expected: str) -> None:
    assert Mapper(MappingOptions(trace_template=template)).map(_rating())["trace_id"] == expected


def test_model_id_comes_from_data_then_meta() -> None:
    record = _rating(data={"rating": 1})
    assert Mapper(MappingOptions(trace_template="{model_id}")).map(record)["trace_id"] == (
        "meta-model"
    )


def test_message_index_is_meta_s_when_given_else_the_thread_length() -> None:
    mapper = Mapper(MappingOptions(trace_template="{message_index}"))
    given = _rating(meta={"chat_id": "c-1", "message_id": "m-2", "message_index": 7})
    assert mapper.map(given)["metadata"]["message_index"] == "7"
    assert mapper.map(given)["trace_id"] == "7"
    assert mapper.map(_rating())["metadata"]["message_index"] == "2"
    lost = _rating(meta={"chat_id": "c-1", "message_id": "gone"})
    assert "message_index" not in Mapper().map(lost)["metadata"]
    assert Mapper().map(lost)["metadata"]["rated_message_in_snapshot"] == "false"


def test_a_history_kept_as_a_list_is_searched_too() -> None:
    listed = _rating(
        snapshot={"history": {"messages": [{"id": "m-1"}, {"id": "m-2", "parentId": "m-1"}]}}
    )
    assert Mapper().map(listed)["metadata"]["rated_message_in_snapshot"] == "true"
    listed["meta"]["message_id"] = "m-9"
    assert Mapper().map(listed)["metadata"]["rated_message_in_snapshot"] == "false"
    no_messages = _rating(snapshot={"history": {"messages": "not a list"}})
    assert Mapper().map(no_messages)["metadata"]["rated_message_in_snapshot"] == "false"


def test_an_empty_snapshot_chat_id_is_no_chat_id() -> None:
    record = _rating(meta={"message_id": "m-2"}, snapshot={"chat": {"id": "", "chat": {}}})
    with pytest.raises(Skip) as skipped:
        Mapper().map(record)
    assert skipped.value.code == "missing_trace_field"
    payload = Mapper(MappingOptions(missing_ids="feedback-id")).map(record)
    assert payload["trace_id"] == "fb-1:m-2"
    assert payload["metadata"]["trace_id_fallback"] == "chat_id=feedback_id"
    both = Mapper(MappingOptions(missing_ids="feedback-id")).map(_rating(meta={}, snapshot=None))
    assert both["metadata"]["trace_id_fallback"] == "chat_id,message_id=feedback_id"


def test_lists_flatten_to_compact_sorted_json_or_joined_scalars() -> None:
    out: dict[str, str] = {}
    flatten("tags", [{"b": "é", "a": 1}], out)
    flatten("names", ["", "x", "x", 2.0, None, True], out)
    assert out == {"tags": '[{"a":1,"b":"é"}]', "names": "x,2,true"}


@pytest.mark.parametrize(("length", "clipped"), [(128, False), (129, True)])
def test_metadata_values_are_clipped_past_128_characters(length: int, clipped: bool) -> None:
    for where in ("value", "key"):
        data = {"rating": 1, "model_id": "m", "reason": "r" * 300}  # always something to clip
        if where == "value":
            data["comment"] = "c" * length
        else:
            data["k" * length] = "v"
        metadata = Mapper().map(_rating(data=data))["metadata"]
        text = metadata.get("comment", "") if where == "value" else max(metadata, key=len)
        assert len(text) == min(length, 128)
        assert text.endswith("…") == clipped


def test_the_time_window_filters_with_its_own_reasons() -> None:
    at = 1795392000
    early = Mapper(MappingOptions(since=at + 1)).in_window(at)
    late = Mapper(MappingOptions(until=at)).in_window(at)
    assert early is not None and early.code == "before_since"
    assert late is not None and late.code == "not_before_until"
    assert Mapper(MappingOptions(since=at, until=at + 1)).in_window(at) is None


def test_template_errors_name_the_field_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown field \{chat\} in '\{chat\}'; use chat_id, "):
        template_fields("{chat}")


@pytest.mark.parametrize(
    "options",
    [MappingOptions(),
     MappingOptions(trace_template="{feedback_id}", up_value=5, down_value=0, weight=0.5,
                    missing_ids="feedback-id", keep_metadata=("model_*",),
                    drop_metadata=("comment",), extra_metadata=(("env", "prod"),),
                    since=1795392000, until=1795478400)],
    ids=["defaults", "every-option"],
)  # fmt: skip
def test_options_survive_the_manifest_round_trip(options: MappingOptions) -> None:
    """verify --export rebuilds the options from the manifest: nothing may change on the way."""
    assert MappingOptions.from_dict(options.as_dict()) == options
    broken = {**options.as_dict(), "weight": "heavy"}
    with pytest.raises(ValueError, match="options are malformed"):
        MappingOptions.from_dict(broken)
    with pytest.raises(ValueError, match="are not the ones this version records"):
        MappingOptions.from_dict({**options.as_dict(), "new": 1})


def test_an_empty_message_id_is_a_missing_one() -> None:
    record = _rating(meta={"chat_id": "c-1", "message_id": ""})
    with pytest.raises(Skip) as skipped:
        Mapper().map(record)
    assert skipped.value.code == "missing_trace_field"
    payload = Mapper(MappingOptions(missing_ids="feedback-id")).map(record)
    assert payload["trace_id"] == "c-1:fb-1"
    assert payload["metadata"]["rated_message_in_snapshot"] == "false"  # no id: not found
