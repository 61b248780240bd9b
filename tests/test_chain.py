"""The README's worked example, end to end against both stand-in servers, with the auditor's
approval and a replay that sends only what was approved."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

from tests.helpers import REAL_EXPORT, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub


def week(tmp: Path, name: str, owui_url: str, key: Path, signers: Path, monkeypatch):
    folder = tmp / name
    monkeypatch.setenv("OPENWEBUI_BASE_URL", owui_url)
    assert run_cli("download", "-o", str(folder / "export.json"), "-q").code == 0
    sidecar = (folder / "export.json.sha256").read_text().split()
    assert sidecar[1] == "export.json"  # `sha256sum -c` runs beside the file
    export, feedback = str(folder / "export.json"), str(folder / "feedback.jsonl")
    assert run_cli("inspect", export).code == 0
    assert run_cli("convert", export, "-o", feedback, "--drop-comments", "-q").code == 0
    previous = [] if name == "week1" else ["--previous", str(tmp / "week1" / "feedback.jsonl")]
    assert run_cli("report", feedback, "--export", export, *previous).code == 0
    page = folder / "feedback.report.html"
    assert page.is_file()
    assert run_cli("verify", feedback, "--export", export).code == 0
    approved = run_cli("approve", feedback, "--export", export, "--key", str(key))
    assert approved.code == 0
    assert f"report: {page}" in approved.stdout + approved.stderr
    return run_cli("replay", feedback, "--allowed-signers", str(signers))


def test_download_convert_approve_replay_then_an_incremental_run(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OPENWEBUI_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("PORTKEY_API_KEY", API_KEY)
    key = tmp_path / "auditor_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"auditor@example.com {key.with_suffix('.pub').read_text()}")
    records = json.loads(REAL_EXPORT.read_text())
    first, second = tmp_path / "served-1.json", tmp_path / "served-2.json"
    first.write_text(json.dumps(records[:6]))
    later = copy.deepcopy(records)  # two more ratings, and one flipped
    flipped = later[3]
    flipped["data"]["rating"] = -flipped["data"]["rating"]
    flipped["updated_at"] += 3600
    second.write_text(json.dumps(later))
    with portkey_stub() as portkey:
        monkeypatch.setenv("PORTKEY_BASE_URL", portkey.url)
        with openwebui_stub(export_file=first) as owui:
            one = week(tmp_path, "week1", owui.url, key, signers, monkeypatch)
        assert one.code == 0, one.stderr
        assert len(portkey.state.stored) == 5  # one record has no chat id: in the rejects
        with openwebui_stub(export_file=second) as owui:
            two = week(tmp_path, "week2", owui.url, key, signers, monkeypatch)
        assert two.code == 0, two.stderr
        counts = portkey.state.feedback_counts()
        assert len(counts) == 8 and set(counts.values()) == {1}  # no duplicate POSTs
        assert [body["value"] for _, body in portkey.state.updates] == [flipped["data"]["rating"]]
    assert "delivered now: 3 posted, 1 updated, already delivered: 4" in two.stderr
    assert "approved by: auditor@example.com" in two.stderr
