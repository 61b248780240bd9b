"""Successive exports: new ratings are posted, changed ones updated, nothing posted twice."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from owui_replay.errors import ExitCode
from owui_replay.ledger import Ledger, default_ledger_path
from tests.conftest import REAL_EXPORT, run_cli
from tests.portkey_stub import portkey_stub
from tests.replay_helpers import journal_events, replay_in_process


def export_file(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records), "utf-8")
    return path


def convert(export: Path, out: Path) -> Path:
    assert run_cli("convert", str(export), "-o", str(out), "-q").code == 0
    return out


def thumbs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("snapshot")]  # the 8 convertible records


def test_second_export_posts_only_new_ratings_and_updates_flipped_ones(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))
    first, later = records[:5], copy.deepcopy(records[:5])
    flipped = later[1]
    flipped["data"]["rating"] = -flipped["data"]["rating"]  # the user changed their mind
    flipped["updated_at"] += 60
    later += records[5:]  # and rated three more answers
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out1 = convert(export_file(tmp_path / "e1.json", first), tmp_path / "one" / "f.jsonl")
        assert replay_in_process(out1, stub.url, "--ledger", str(ledger)).code == 0
        assert len(stub.state.stored) == 5
        out2 = convert(export_file(tmp_path / "e2.json", later), tmp_path / "two" / "f.jsonl")
        result = replay_in_process(out2, stub.url, "--ledger", str(ledger))
        assert result.code == ExitCode.OK, result.stderr
        posted = stub.state.feedback_counts()
        updates = list(stub.state.updates)
        first_ids = {p["metadata"]["feedback_id"]: fid for fid, p in stub.state.stored}
    assert len(posted) == 8 and set(posted.values()) == {1}  # zero duplicate POSTs
    assert len(updates) == 1
    fid, body = updates[0]
    assert fid == first_ids[flipped["id"]]  # the feedback Portkey stored in the first run
    assert body["value"] == -(records[1]["data"]["rating"]) and "trace_id" not in body
    assert body["metadata"]["feedback_id"] == flipped["id"]
    assert Ledger(ledger, stub.url).lookup(flipped["id"]).updated_at == flipped["updated_at"]


def test_unchanged_export_sends_nothing_the_second_time(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out1 = convert(REAL_EXPORT, tmp_path / "a" / "f.jsonl")
        out2 = convert(REAL_EXPORT, tmp_path / "b" / "f.jsonl")  # a fresh handoff, no journal
        assert replay_in_process(out1, stub.url, "--ledger", str(ledger)).code == 0
        again = replay_in_process(out2, stub.url, "--ledger", str(ledger), quiet=False)
        assert again.code == 0 and stub.state.requests == 8
    assert "unchanged since an earlier export: 8" in again.stderr


def test_an_older_export_does_not_undo_a_newer_rating(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))[:2]
    newer = copy.deepcopy(records)
    newer[0]["data"]["rating"] = -newer[0]["data"]["rating"]
    newer[0]["updated_at"] += 100
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out_new = convert(export_file(tmp_path / "new.json", newer), tmp_path / "n" / "f.jsonl")
        out_old = convert(export_file(tmp_path / "old.json", records), tmp_path / "o" / "f.jsonl")
        assert replay_in_process(out_new, stub.url, "--ledger", str(ledger)).code == 0
        stale = replay_in_process(out_old, stub.url, "--ledger", str(ledger), quiet=False)
        assert stale.code == 0 and stub.state.requests == 2 and not stub.state.updates
    assert "older than what Portkey has: 1" in stale.stderr


def test_ledger_is_rebuilt_from_the_journal_after_a_crash(tmp_path: Path) -> None:
    """Acks recorded in the journal but not yet in the ledger (a kill between the two)."""
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out = convert(REAL_EXPORT, tmp_path / "a" / "f.jsonl")
        assert replay_in_process(out, stub.url, "--ledger", str(ledger)).code == 0
        ledger.unlink()  # as if the ledger writes had never reached the disk
        for suffix in ("-wal", "-shm"):
            Path(str(ledger) + suffix).unlink(missing_ok=True)
        assert replay_in_process(out, stub.url, "--ledger", str(ledger)).code == 0  # resume
        fresh = convert(REAL_EXPORT, tmp_path / "b" / "f.jsonl")
        assert replay_in_process(fresh, stub.url, "--ledger", str(ledger)).code == 0
        assert stub.state.requests == 8
    acks = [e for e in journal_events(out.with_name("f.journal.jsonl")) if e["t"] == "ack"]
    assert Ledger(ledger, stub.url).count() == 8 == sum(len(e["lines"]) for e in acks)


def test_an_ack_without_feedback_ids_still_prevents_a_duplicate(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))[:3]
    later = copy.deepcopy(records)
    later[0]["data"]["rating"] = -later[0]["data"]["rating"]
    later[0]["updated_at"] += 60
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub(omit_feedback_ids=True) as stub:
        out1 = convert(export_file(tmp_path / "e1.json", records), tmp_path / "a" / "f.jsonl")
        assert replay_in_process(out1, stub.url, "--ledger", str(ledger)).code == 0
        out2 = convert(export_file(tmp_path / "e2.json", later), tmp_path / "b" / "f.jsonl")
        second = replay_in_process(out2, stub.url, "--ledger", str(ledger), quiet=False)
        assert second.code == 0 and len(stub.state.stored) == 3 and not stub.state.updates
    assert "changed but not updatable (Portkey returned no feedback id): 1" in second.stderr


def test_no_ledger_posts_everything(tmp_path: Path) -> None:
    with portkey_stub() as stub:
        out1 = convert(REAL_EXPORT, tmp_path / "a" / "f.jsonl")
        out2 = convert(REAL_EXPORT, tmp_path / "b" / "f.jsonl")
        assert replay_in_process(out1, stub.url).code == 0
        assert replay_in_process(out2, stub.url, "--no-ledger").code == 0
        assert len(stub.state.stored) == 16


def test_default_ledger_location(private_state_dir: Path, tmp_path: Path) -> None:
    assert default_ledger_path() == private_state_dir / "owui-replay" / "ledger.sqlite3"
    with portkey_stub() as stub:
        assert replay_in_process(convert(REAL_EXPORT, tmp_path / "f.jsonl"), stub.url).code == 0
        assert Ledger(default_ledger_path(), stub.url).count() == 8


def test_ledgers_are_per_endpoint(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    out = convert(REAL_EXPORT, tmp_path / "f.jsonl")
    with portkey_stub() as first:
        assert replay_in_process(out, first.url, "--ledger", str(ledger)).code == 0
    with portkey_stub() as second:  # another Portkey deployment: it has nothing yet
        fresh = convert(REAL_EXPORT, tmp_path / "b" / "f.jsonl")
        assert replay_in_process(fresh, second.url, "--ledger", str(ledger)).code == 0
        assert len(second.state.stored) == 8
