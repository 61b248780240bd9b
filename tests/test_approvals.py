"""Signed approvals with the real ssh-keygen: replay sends only what allowed principals signed."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from owui_replay.approvals import NAMESPACE
from owui_replay.delivery_state import default_state_path
from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, Run, environment, run_cli
from tests.portkey_stub import portkey_stub
from tests.replay_helpers import journal_events, replay_in_process

if shutil.which("ssh-keygen") is None:  # .ci/run installs openssh-client; say so loudly
    raise RuntimeError("these tests need ssh-keygen (apt-get install openssh-client)")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    made = {}
    for name in ("alice", "bob", "mallory"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)],
            check=True,
        )
        made[name] = folder / name
    return made


@pytest.fixture
def allowed(tmp_path: Path, keys: dict[str, Path]) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(
        "".join(
            f"{name}@example.com {(keys[name].with_suffix('.pub')).read_text()}"
            for name in ("alice", "bob")
        )
    )
    return path


@pytest.fixture
def handoff(tmp_path: Path) -> Path:
    out = tmp_path / "handoff" / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    return out


def approve(feedback: Path, key: Path, *args: str) -> Run:
    return run_cli("approve", str(feedback), "--key", str(key), *args)


def replay_signed(feedback: Path, url: str, allowed: Path, *args: str) -> Run:
    return replay_in_process(feedback, url, "--allowed-signers", str(allowed), *args, quiet=False)


def test_an_approved_handoff_replays_and_records_who_approved(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    signed = approve(handoff, keys["alice"], "--export", str(REAL_EXPORT))
    assert signed.code == ExitCode.OK, signed.stdout + signed.stderr
    assert "signed feedback.manifest.json with key SHA256:" in signed.stdout
    with portkey_stub() as stub:
        result = replay_signed(handoff, stub.url, allowed)
        assert result.code == ExitCode.OK, result.stderr
        assert len(stub.state.stored) == 8
    assert "approved by: alice@example.com" in result.stderr
    runs = [
        e for e in journal_events(handoff.with_name("feedback.journal.jsonl")) if e["t"] == "run"
    ]
    assert runs[-1]["options"]["approved_by"] == ["alice@example.com"]
    with contextlib.closing(sqlite3.connect(default_state_path())) as db:
        approvers = {row[0] for row in db.execute("SELECT approved_by FROM ratings")}
    assert approvers == {"alice@example.com"}


def refused(handoff: Path, allowed: Path, *args: str) -> tuple[Run, int]:
    with portkey_stub() as stub:
        result = replay_signed(handoff, stub.url, allowed, *args)
        return result, stub.state.requests


def test_an_unsigned_handoff_is_refused(handoff: Path, allowed: Path) -> None:
    result, requests = refused(handoff, allowed)
    assert result.code == ExitCode.NOT_APPROVED and requests == 0
    assert "needs 1 approval(s) from allowed_signers, has 0" in result.stderr
    assert "no valid signature from: alice@example.com, bob@example.com" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_signer_not_in_the_file_is_refused(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    assert approve(handoff, keys["mallory"]).code == ExitCode.OK
    result, requests = refused(handoff, allowed)
    assert result.code == ExitCode.NOT_APPROVED and requests == 0
    assert "is not in allowed_signers: not an allowed signer" in result.stderr


def test_a_manifest_changed_after_signing_is_refused(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    assert approve(handoff, keys["alice"]).code == ExitCode.OK
    manifest = handoff.with_name("feedback.manifest.json")
    doc = json.loads(manifest.read_text())
    doc["options"]["weight"] = 0.5  # a harmless-looking edit
    manifest.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    result, requests = refused(handoff, allowed)
    assert result.code == ExitCode.NOT_APPROVED and requests == 0
    assert (
        "does not match feedback.manifest.json: the manifest (or the files it hashes) changed"
        in (result.stderr)
    )


def test_a_jsonl_changed_after_signing_is_refused(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    assert approve(handoff, keys["alice"]).code == ExitCode.OK
    lines = handoff.read_text().splitlines(keepends=True)
    handoff.write_text("".join(lines[:-1]))  # a line removed after approval
    result, requests = refused(handoff, allowed)
    assert result.code == ExitCode.MISMATCH and requests == 0
    assert "does not match feedback.manifest.json" in result.stderr


def test_a_signature_under_another_namespace_is_refused(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    manifest = handoff.with_name("feedback.manifest.json")
    folder = handoff.with_name("feedback.approvals")
    folder.mkdir()
    signature = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(keys["alice"]), "-n", "git"],
        input=manifest.read_bytes(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    (folder / "alice.sig").write_bytes(signature)
    result, requests = refused(handoff, allowed)
    assert result.code == ExitCode.NOT_APPROVED and requests == 0
    assert f"signed under namespace 'git', not '{NAMESPACE}'" in result.stderr


def test_fewer_approvals_than_required_are_refused_and_enough_are_sent(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    assert approve(handoff, keys["alice"]).code == ExitCode.OK
    result, requests = refused(handoff, allowed, "--min-approvals", "2")
    assert result.code == ExitCode.NOT_APPROVED and requests == 0
    assert "needs 2 approval(s)" in result.stderr and "has 1 (alice@example.com)" in result.stderr
    assert "no valid signature from: bob@example.com" in result.stderr
    assert approve(handoff, keys["bob"]).code == ExitCode.OK
    assert len(list(handoff.with_name("feedback.approvals").glob("*.sig"))) == 2  # both kept
    with portkey_stub() as stub:
        sent = replay_signed(handoff, stub.url, allowed, "--min-approvals", "2")
        assert sent.code == ExitCode.OK and len(stub.state.stored) == 8
    assert "approved by: alice@example.com, bob@example.com" in sent.stderr


def test_approve_signs_nothing_that_does_not_verify(
    handoff: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads(REAL_EXPORT.read_text())[:3]))
    result = approve(handoff, keys["alice"], "--export", str(other))
    assert result.code == ExitCode.MISMATCH and "not signed" in result.stderr
    assert not handoff.with_name("feedback.approvals").exists()


def test_verify_lists_the_valid_signatures(
    handoff: Path, keys: dict[str, Path], allowed: Path
) -> None:
    assert approve(handoff, keys["alice"]).code == ExitCode.OK
    assert approve(handoff, keys["mallory"]).code == ExitCode.OK
    listed = run_cli("verify", str(handoff), "--allowed-signers", str(allowed))
    assert listed.code == ExitCode.OK
    sigs = [line for line in listed.stdout.splitlines() if line.startswith("sig")]
    assert any("valid, by alice@example.com" in line for line in sigs)
    assert any("not an allowed signer" in line for line in sigs)
    unchecked = run_cli("verify", str(handoff))
    assert unchecked.stdout.count("not checked (pass --allowed-signers FILE") == 2


def test_no_ssh_keygen_is_one_line(
    handoff: Path, keys: dict[str, Path], allowed: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with environment(PATH=str(empty)):
        signed = approve(handoff, keys["alice"])
        result, requests = refused(handoff, allowed)
    assert signed.code == ExitCode.NOT_APPROVED
    assert signed.stderr.count("\n") == 1 and "ssh-keygen was not found" in signed.stderr
    assert result.code == ExitCode.NOT_APPROVED and requests == 0
    assert "ssh-keygen was not found" in result.stderr


def test_an_old_ssh_keygen_is_one_line(
    handoff: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    old = tmp_path / "old-bin"
    old.mkdir()
    fake = old / "ssh-keygen"
    fake.write_text("#!/bin/sh\necho 'ssh-keygen: unknown option -- Y' >&2\nexit 1\n")
    fake.chmod(0o755)
    with environment(PATH=f"{old}:/usr/bin:/bin"):
        signed = approve(handoff, keys["alice"])
    assert signed.code == ExitCode.NOT_APPROVED
    assert "is too old" in signed.stderr and signed.stderr.count("\n") == 1
