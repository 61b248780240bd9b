"""The bundled schemas: they accept real exports, reject what the mapping cannot use, and the
fast validator agrees with the reference one."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from owui_replay.schemas import (
    OPENWEBUI_SCHEMA,
    PORTKEY_SCHEMA,
    RecordValidator,
    inline_local_refs,
    load_schema,
    truncate_value,
)
from tests.helpers import EDGE_EXPORT, FIXTURES, FLAT_EXPORT, REAL_EXPORT, load_fixture, read_jsonl
from tests.strategies import records

VALIDATOR = RecordValidator(OPENWEBUI_SCHEMA)
REFERENCE = RecordValidator(OPENWEBUI_SCHEMA, use_fast=False)


def test_schemas_are_valid_2020_12_schemas() -> None:
    for name in (OPENWEBUI_SCHEMA, PORTKEY_SCHEMA):
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", [REAL_EXPORT, FLAT_EXPORT])
def test_real_and_flat_exports_are_valid(path: Any) -> None:
    for record in load_fixture(path):
        assert VALIDATOR.errors(record) == []
        assert VALIDATOR.is_valid(record)


def test_user_pages_without_snapshot_are_valid() -> None:
    page = load_fixture(FIXTURES / "openwebui-0.12.4" / "user-page1.json")
    assert all(VALIDATOR.is_valid(r) for r in page["items"])


def test_inlined_reference_schema_gives_the_same_errors_as_the_original(
    real_records: list[Any],
) -> None:
    original = jsonschema.Draft202012Validator(load_schema(OPENWEBUI_SCHEMA))
    inlined = jsonschema.Draft202012Validator(inline_local_refs(load_schema(OPENWEBUI_SCHEMA)))
    assert "$ref" not in json.dumps(inline_local_refs(load_schema(OPENWEBUI_SCHEMA)))

    def errors(validator: Any, record: Any) -> list[Any]:
        return sorted((list(e.absolute_path), e.message) for e in validator.iter_errors(record))

    for record in load_fixture(EDGE_EXPORT) + real_records:
        assert errors(inlined, record) == errors(original, record)


def test_new_fields_anywhere_do_not_reject_a_good_rating(real_records: list[Any]) -> None:
    record = copy.deepcopy(real_records[6])
    record["new_top_level"] = [1]
    record["data"]["new_data_field"] = {"x": 1}
    record["meta"]["new_meta_field"] = None
    message = next(iter(record["snapshot"]["chat"]["chat"]["history"]["messages"].values()))
    message["brand_new"] = {"nested": [True]}
    record["snapshot"]["chat"]["chat"]["unheard_of"] = 3
    assert VALIDATOR.is_valid(record)


@pytest.mark.parametrize(
    ("path", "value", "expected_path"),
    [
        (("data", "rating"), True, "/data/rating"),
        (("data", "rating"), "thumbs up", "/data/rating"),
        (("data", "rating"), 1.5, "/data/rating"),
        (("updated_at",), 1795417826000, "/updated_at"),  # milliseconds, not seconds
        (("meta", "chat_id"), 42, "/meta/chat_id"),
        (("meta", "arena"), "yes", "/meta/arena"),
        (("id",), "", "/id"),
        (("snapshot", "chat", "chat", "history", "messages"), "gone", "/snapshot/chat"),
    ],
)
def test_what_the_mapping_depends_on_is_checked(
    real_records: list[Any], path: tuple[str, ...], value: Any, expected_path: str
) -> None:
    record = copy.deepcopy(real_records[6])
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not VALIDATOR.is_valid(record)
    errors = VALIDATOR.errors(record)
    assert errors and errors[0].path.startswith(expected_path)


def test_required_fields(real_records: list[Any]) -> None:
    for key in ("id", "user_id", "type", "data", "updated_at"):
        record = copy.deepcopy(real_records[6])
        del record[key]
        assert not VALIDATOR.is_valid(record), key


def test_error_values_are_truncated(real_records: list[Any]) -> None:
    record = copy.deepcopy(real_records[6])
    record["data"] = "x" * 1_000_000
    (error,) = VALIDATOR.errors(record)
    assert len(error.message) < 200 and error.path == "/data"
    assert truncate_value("y" * 500).endswith("…") and len(truncate_value("y" * 500)) == 80


def test_every_written_payload_fits_the_portkey_schema() -> None:
    payload_validator = RecordValidator(PORTKEY_SCHEMA)
    for name in ("openwebui-0.12.4", "flat", "edge-cases"):
        for payload in read_jsonl(FIXTURES / name / "expected" / "feedback.jsonl"):
            assert payload_validator.reference_is_valid(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"value": 1},
        {"trace_id": "", "value": 1},
        {"trace_id": "t", "value": 11},
        {"trace_id": "t", "value": 1.5},
        {"trace_id": "t", "value": 1, "weight": 2},
        {"trace_id": "t", "value": 1, "metadata": {"k": 1}},
        {"trace_id": "t", "value": 1, "metadata": {"k": "v" * 129}},
        {"trace_id": "t", "value": 1, "extra": True},
    ],
)
def test_portkey_schema_rejects_what_portkey_would(payload: dict[str, Any]) -> None:
    assert not RecordValidator(PORTKEY_SCHEMA).is_valid(payload)


# --- the fast verdict must equal the reference verdict ---


def test_accelerated_validator_is_in_use() -> None:
    assert VALIDATOR.accelerated, "jsonschema-rs is a declared dependency; the hot path needs it"


@pytest.mark.parametrize("path", [REAL_EXPORT, FLAT_EXPORT, EDGE_EXPORT])
def test_fast_and_reference_verdicts_agree_on_fixtures(path: Any) -> None:
    for record in load_fixture(path):
        assert VALIDATOR.is_valid(record) == VALIDATOR.reference_is_valid(record)


@pytest.mark.parametrize("path", [REAL_EXPORT, FLAT_EXPORT, EDGE_EXPORT])
def test_errors_are_those_of_the_reference_validator(path: Any) -> None:
    """Skipping a valid snapshot in the error pass changes no message and no path."""
    reference = RecordValidator(OPENWEBUI_SCHEMA, use_fast=False)
    for record in load_fixture(path):
        assert VALIDATOR.errors(record) == reference.errors(record)


def test_snapshot_errors_are_still_reported(real_records: list[Any]) -> None:
    record = copy.deepcopy(real_records[6])
    record["updated_at"] = "later"
    history = record["snapshot"]["chat"]["chat"]["history"]
    next(iter(history["messages"].values()))["parentId"] = 7
    paths = [e.path for e in VALIDATOR.errors(record)]
    assert "/updated_at" in paths and any(p.startswith("/snapshot/chat") for p in paths)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_fast_and_reference_verdicts_agree_on_generated_records(record: Any) -> None:
    verdict = VALIDATOR.reference_is_valid(record)
    assert VALIDATOR.is_valid(record) == verdict
    assert (VALIDATOR.errors(record) == []) == verdict  # a reject always says why
    assert VALIDATOR.errors(record) == REFERENCE.errors(record)
