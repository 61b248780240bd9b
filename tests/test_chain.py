"""The README's worked example, end to end against both stand-in servers."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from tests.conftest import REAL_EXPORT, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub


def test_download_convert_verify_replay_then_an_incremental_run(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OPENWEBUI_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("PORTKEY_API_KEY", API_KEY)
    records = json.loads(REAL_EXPORT.read_text())
    week1 = tmp_path / "week1"
    week2 = tmp_path / "week2"
    with portkey_stub() as portkey:
        monkeypatch.setenv("PORTKEY_BASE_URL", portkey.url)
        # week 1: the export as it is
        first_export = tmp_path / "served-1.json"
        first_export.write_text(json.dumps(records[:6]))
        with openwebui_stub(export_file=first_export) as owui:
            monkeypatch.setenv("OPENWEBUI_BASE_URL", owui.url)
            assert run_cli("download", "-o", str(week1 / "export.json"), "-q").code == 0
        assert (
            run_cli(
                "convert", str(week1 / "export.json"), "-o", str(week1 / "feedback.jsonl"), "-q"
            ).code
            == 0
        )
        assert (
            run_cli(
                "verify", str(week1 / "feedback.jsonl"), "--export", str(week1 / "export.json")
            ).code
            == 0
        )
        assert run_cli("replay", str(week1 / "feedback.jsonl"), "-q").code == 0
        assert len(portkey.state.stored) == 5  # one record has no chat id: in the rejects
        # week 2: two more ratings, and one flipped
        later = copy.deepcopy(records)
        flipped = later[3]
        flipped["data"]["rating"] = -flipped["data"]["rating"]
        flipped["updated_at"] += 3600
        second_export = tmp_path / "served-2.json"
        second_export.write_text(json.dumps(later))
        with openwebui_stub(export_file=second_export) as owui:
            monkeypatch.setenv("OPENWEBUI_BASE_URL", owui.url)
            assert run_cli("download", "-o", str(week2 / "export.json"), "-q").code == 0
        assert (
            run_cli(
                "convert", str(week2 / "export.json"), "-o", str(week2 / "feedback.jsonl"), "-q"
            ).code
            == 0
        )
        assert run_cli("verify", str(week2 / "feedback.jsonl")).code == 0
        result = run_cli("replay", str(week2 / "feedback.jsonl"))
        assert result.code == 0, result.stderr
        counts = portkey.state.feedback_counts()
        assert len(counts) == 8 and set(counts.values()) == {1}  # no duplicate POSTs
        assert [body["value"] for _, body in portkey.state.updates] == [flipped["data"]["rating"]]
    assert "delivered now: 3 posted, 1 updated, already delivered: 4" in result.stderr
    ledger = Path(os.environ["XDG_STATE_HOME"]) / "owui-replay" / "ledger.sqlite3"
    assert ledger.exists()  # the default ledger carried week 1 into week 2
