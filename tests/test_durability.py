"""Durability is observed, not assumed: the order of fsync and rename on the real files.

The recorder wraps os.fsync and os.replace so that each call still happens, and notes which
path it touched (an fd's path comes from /proc/self/fd). For every file the tool commits:
its NAME.partial is fsynced before it is renamed to NAME, and the folder is fsynced after.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from owui_replay.delivery_state import DeliveryState
from tests.helpers import REAL_EXPORT, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import Fault, portkey_stub
from tests.replay_helpers import make_feedback, replay_in_process


@contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def replace(src, dst, *args, **kwargs) -> None:
        real_replace(src, dst, *args, **kwargs)
        events.append(("rename", os.path.realpath(src), os.path.realpath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    yield events


def assert_committed(events: list[tuple[str, ...]], final: Path) -> int:
    """NAME.partial fsynced, then renamed to NAME, then its folder fsynced; returns the
    position of the rename."""
    final = Path(os.path.realpath(final))
    partial = str(final) + ".partial"
    renames = [i for i, e in enumerate(events) if e[0] == "rename" and e[2] == str(final)]
    assert renames, f"{final.name} was never renamed into place: {events}"
    at = renames[-1]
    assert events[at][1] == partial
    synced = [i for i, e in enumerate(events[:at]) if e == ("fsync", partial)]
    assert synced, f"{partial} was renamed without an fsync first"
    after = [e for e in events[at + 1 :] if e == ("fsync", str(final.parent))]
    assert after, f"the folder of {final.name} was not fsynced after the rename"
    return at


def test_convert_commits_each_output_durably_and_the_manifest_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "f.jsonl"
    with recording(monkeypatch) as events:
        assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    rejects = assert_committed(events, tmp_path / "f.rejects.jsonl")
    output = assert_committed(events, out)
    manifest = assert_committed(events, tmp_path / "f.manifest.json")
    assert rejects < manifest and output < manifest  # the manifest says "complete": last


def test_download_commits_the_export_and_its_sidecar_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "e.json"
    with (
        openwebui_stub(export_file=REAL_EXPORT) as server,
        recording(monkeypatch) as events,
        environment(OPENWEBUI_BASE_URL=server.url, OPENWEBUI_TOKEN=ADMIN_TOKEN),
    ):
        assert run_cli("download", "-o", str(out), "-q").code == 0
    export = assert_committed(events, out)
    sidecar = assert_committed(events, tmp_path / "e.json.sha256")
    assert export < sidecar  # the hash never names a file that is not there


def test_json_state_files_are_committed_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from owui_replay.atomic import write_json_atomic

    with recording(monkeypatch) as events:
        write_json_atomic(tmp_path / "sync.json", {"outcome": "delivered"})
    assert_committed(events, tmp_path / "sync.json")


@pytest.mark.parametrize(("power_safe", "level"), [(False, 1), (True, 2)])
def test_the_delivery_state_commits_in_wal_mode_at_the_chosen_sync_level(
    tmp_path: Path, power_safe: bool, level: int
) -> None:
    """synchronous=NORMAL (1) survives a killed process; FULL (2) a power loss too."""
    with DeliveryState(tmp_path / "s.sqlite3", "http://x/v1", power_safe=power_safe) as state:
        mode = state._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = state._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", level)


def test_the_journal_and_failed_file_are_fsynced_before_replay_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub(faults=[Fault("400")]) as stub, recording(monkeypatch) as events:
        replay_in_process(feedback, stub.url, "--concurrency", "1")
    synced = {e[1] for e in events if e[0] == "fsync"}
    assert str(tmp_path / "feedback.journal.jsonl") in synced
    assert str(tmp_path / "feedback.failed.jsonl") in synced
    assert json.loads((tmp_path / "feedback.journal.jsonl").read_text().splitlines()[-1]) == {
        "t": "end",
        "reason": "complete",
    }
