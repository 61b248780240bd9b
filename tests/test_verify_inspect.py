"""verify (the auditor's check) and inspect (what is in an export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from owui_replay.errors import ExitCode
from tests.conftest import EDGE_EXPORT, FIXTURES, REAL_EXPORT, run_cli


def handoff(tmp_path: Path, export: Path = EDGE_EXPORT) -> Path:
    out = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(export), "-o", str(out), "-q").code == 0
    return out


def test_a_fresh_handoff_verifies(tmp_path: Path) -> None:
    result = run_cli("verify", str(handoff(tmp_path)), "--export", str(EDGE_EXPORT))
    assert result.code == 0, result.stdout
    assert "FAIL" not in result.stdout and result.stdout.endswith("handoff verified\n")
    assert "counts add up: 23 records" in result.stdout
    assert "values: -1 x3, +1 x8" in result.stdout


def test_the_golden_handoff_verifies_in_place() -> None:
    result = run_cli("verify", str(FIXTURES / "openwebui-0.12.4" / "expected" / "feedback.jsonl"))
    assert result.code == 0, result.stdout


def test_an_edited_line_fails(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    lines = out.read_text("utf-8").splitlines(keepends=True)
    payload = json.loads(lines[0])
    payload["value"] = -payload["value"]  # still a valid payload, but not what was reviewed
    lines[0] = json.dumps(payload, ensure_ascii=False) + "\n"
    out.write_text("".join(lines), "utf-8")
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH
    assert "FAIL  feedback.jsonl: sha256" in result.stdout
    assert result.stdout.endswith("handoff does NOT match its manifest\n")


def test_an_invalid_line_fails(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    with open(out, "a") as handle:
        handle.write('{"trace_id": "t", "value": 99}\n')
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH and "FAIL  every line is a Portkey" in result.stdout


def test_edited_rejects_fail(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    rejects = tmp_path / "feedback.rejects.jsonl"
    rejects.write_text("".join(rejects.read_text("utf-8").splitlines(keepends=True)[1:]), "utf-8")
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH and "FAIL  feedback.rejects.jsonl" in result.stdout


def test_a_missing_manifest_or_wrong_export_fails(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    wrong = run_cli("verify", str(out), "--export", str(REAL_EXPORT))
    assert wrong.code == ExitCode.MISMATCH and "FAIL  export export.json" in wrong.stdout
    (tmp_path / "feedback.manifest.json").unlink()
    missing = run_cli("verify", str(out))
    assert missing.code == ExitCode.MISMATCH and "FAIL  manifest" in missing.stdout


def test_inspect_counts_what_is_there() -> None:
    result = run_cli("inspect", str(EDGE_EXPORT), "--json")
    assert result.code == 0
    stats = json.loads(result.stdout)
    assert stats["records"] == 23 and stats["invalid"] == 4 and stats["arena"] == 1
    assert stats["ratings"] == {"+1": 11, "-1": 4, "missing": 2, "0": 1, "+7": 1}
    assert stats["types"] == {"rating": 18, "arena_vote": 1}
    assert sum(stats["users"].values()) == sum(stats["days"].values()) == 19
    assert stats["updated_at"] == {"first": 1795417826, "last": 1795417950}


def test_inspect_table_on_the_real_export() -> None:
    result = run_cli("inspect", str(REAL_EXPORT), "--top", "2")
    assert result.code == 0
    assert result.stdout.startswith("records 9   invalid 0   arena 1\n")
    assert "reasons (" in result.stdout and "… " in result.stdout


def test_inspect_reads_gzip_and_refuses_broken_files(tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "e.json.gz"
    gz.write_bytes(gzip.compress(REAL_EXPORT.read_bytes()))
    assert json.loads(run_cli("inspect", str(gz), "--json").stdout)["records"] == 9
    broken = tmp_path / "b.json"
    shutil.copyfile(REAL_EXPORT, broken)
    broken.write_bytes(broken.read_bytes()[:-300])
    result = run_cli("inspect", str(broken))
    assert result.code == ExitCode.BAD_INPUT and "byte offset" in result.stderr
