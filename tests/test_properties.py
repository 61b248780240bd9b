"""Property: whatever the records, each one ends in exactly one place and nothing crashes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owui_replay.converting import convert
from owui_replay.mapping import MappingOptions
from tests.strategies import records


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=12), st.sampled_from(["reject", "feedback-id"]))
def test_every_record_ends_in_exactly_one_of_output_or_rejects(
    batch: list[Any], missing_ids: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.json"
        export.write_text(json.dumps(batch), "utf-8")
        out = Path(tmp) / "f.jsonl"
        result = convert(str(export), out, MappingOptions(missing_ids=missing_ids), progress=False)
        payloads = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
        rejects = [json.loads(x) for x in (Path(tmp) / "f.rejects.jsonl").read_text().splitlines()]
    rejected = [r["index"] for r in rejects]
    assert len(rejected) == len(set(rejected))  # nobody is rejected twice
    assert len(payloads) + len(rejects) == len(batch) == result.records
    written = [i for i in range(len(batch)) if i not in set(rejected)]
    assert sorted(p["metadata"]["feedback_id"] for p in payloads) == sorted(
        batch[i]["id"] for i in written
    )
    assert sum(result.counts.values()) == len(batch)
    for payload in payloads:
        assert payload["value"] in (1, -1)
        assert all(isinstance(v, str) and len(v) <= 128 for v in payload["metadata"].values())
