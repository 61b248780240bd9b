"""Every command's --json output has exactly the fields README.md documents."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, ROOT, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """command -> (fields always present, fields present only in some runs)."""
    text = (ROOT / "README.md").read_text("utf-8")
    block = text.split("<!-- json-fields -->", 1)[1].split("<!-- /json-fields -->", 1)[0]
    fields: dict[str, tuple[set[str], set[str]]] = {}
    for line in block.strip().splitlines():
        command, _, rest = line.removeprefix("- ").partition(":")
        always, *sometimes = re.split(r", and (?:when|after)", rest, maxsplit=1)
        names = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", always))
        extra = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", "".join(sometimes)))
        fields[command] = (set(names), set(extra))
    return fields


FIELDS = documented()


def keys_of(stdout: str) -> set[str]:
    return set(json.loads(stdout))


def test_every_command_with_json_is_documented() -> None:
    assert set(FIELDS) == {"convert", "verify", "approve", "replay", "download"}


def test_convert_json(tmp_path: Path) -> None:
    always, written = FIELDS["convert"]
    real = run_cli("convert", str(REAL_EXPORT), "-o", str(tmp_path / "f.jsonl"), "--json", "-q")
    dry = run_cli("convert", str(REAL_EXPORT), "--dry-run", "--json", "-q")
    assert keys_of(real.stdout) == always | written
    assert keys_of(dry.stdout) == always
    doc = json.loads(real.stdout)
    assert doc["outcomes"]["written"] == 8 and doc["exit_code"] == 0


def test_verify_and_approve_json(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    verified = run_cli("verify", str(out), "--export", str(REAL_EXPORT), "--json")
    assert keys_of(verified.stdout) == FIELDS["verify"][0]
    assert json.loads(verified.stdout)["ok"] is True
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    approved = run_cli("approve", str(out), "--key", str(key), "--json")
    assert approved.code == 0, approved.stderr
    documented_approve = FIELDS["approve"][0] | FIELDS["verify"][0]
    assert keys_of(approved.stdout) == documented_approve
    assert json.loads(approved.stdout)["fingerprint"].startswith("SHA256:")


def test_replay_json(tmp_path: Path) -> None:
    always, after = FIELDS["replay"]
    out = tmp_path / "f.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    with portkey_stub() as stub, environment(PORTKEY_API_KEY=API_KEY):
        dry = run_cli("replay", str(out), "--base-url", stub.url, "--dry-run", "--json", "-q")
        real = run_cli("replay", str(out), "--base-url", stub.url, "--json", "-q")
    assert keys_of(dry.stdout) == always
    assert keys_of(real.stdout) == always | after
    doc = json.loads(real.stdout)
    assert doc["posted"] == 8 and doc["endpoint"] == stub.url and doc["stop_reason"] is None


def test_download_json(tmp_path: Path) -> None:
    with (
        openwebui_stub(export_file=REAL_EXPORT) as owui,
        environment(OPENWEBUI_BASE_URL=owui.url, OPENWEBUI_TOKEN=ADMIN_TOKEN),
    ):
        result = run_cli("download", "-o", str(tmp_path / "e.json"), "--json", "-q")
    assert keys_of(result.stdout) == FIELDS["download"][0]
    assert json.loads(result.stdout)["records"] == 9


@pytest.mark.parametrize("command", ["convert", "verify", "replay"])
def test_a_failure_prints_no_document_only_its_line_on_stderr(tmp_path: Path, command: str) -> None:
    """As gh and pip do: no result, no JSON; tests/test_json_everywhere.py covers every command."""
    missing = str(tmp_path / "missing.jsonl")
    argv = {
        "convert": ["convert", missing, "-o", str(tmp_path / "o.jsonl")],
        "verify": ["verify", missing],
        "replay": ["replay", missing, "--base-url", "http://127.0.0.1:9/v1"],
    }[command]
    with environment(PORTKEY_API_KEY=API_KEY):
        result = run_cli(*argv, "--json")
    assert result.stdout == "" and result.code not in (ExitCode.OK, ExitCode.ERROR)
    assert result.stderr.count("\n") == 1 and "missing.jsonl" in result.stderr
