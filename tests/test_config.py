"""One configuration file for every command: precedence, checking, and approvals by machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, environment, read_jsonl, run_cli
from tests.openwebui_stub import ADMIN_TOKEN
from tests.portkey_stub import API_KEY, portkey_stub
from tests.replay_helpers import chain


def config_file(text: str) -> Path:
    """The default place: $XDG_CONFIG_HOME/owui-replay/config.toml (a temporary one here)."""
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "owui-replay" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def comments(path: Path) -> list[str]:
    return [p["metadata"]["comment"] for p in read_jsonl(path) if "comment" in p["metadata"]]


def test_convert_and_sync_read_the_same_convert_table(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(plain), "-q").code == 0
    assert comments(plain), "the fixture has comments: the test needs them"
    config_file("[convert]\ndrop_comments = true\n")
    chained = tmp_path / "chained.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(chained), "-q").code == 0
    assert comments(chained) == []
    with chain(tmp_path, json.loads(REAL_EXPORT.read_text())) as (pk, _owui, _export):
        synced = run_cli("sync", "--workdir", str(tmp_path / "work"), "-q")
        stored = [payload for _, payload in pk.state.stored]
    assert synced.code == ExitCode.OK, synced.stderr
    assert len(stored) == 8 and not any("comment" in s.get("metadata", {}) for s in stored)
    manifest = json.loads(chained.with_name("chained.manifest.json").read_text())
    assert manifest["options"]["drop_metadata"] == ["comment"]


def settings(*argv: str) -> dict[str, dict[str, str]]:
    shown = run_cli("config", *argv, "--json")
    assert shown.code == ExitCode.OK, shown.stderr
    return json.loads(shown.stdout)["settings"]


def test_the_command_line_beats_the_environment_beats_the_file_beats_the_default(
    tmp_path: Path,
) -> None:
    handoff = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(handoff), "-q").code == 0
    assert settings("replay")["replay"]["--portkey-url"]["source"] == "default"
    path = config_file('[replay]\nportkey_url = "https://from-file.example.com/v1"\n')
    got = settings("replay")["replay"]["--portkey-url"]
    assert got == {"value": "https://from-file.example.com/v1", "source": f"config {path} [replay]"}
    with environment(PORTKEY_BASE_URL="https://from-env.example.com/v1"):
        got = settings("replay")["replay"]["--portkey-url"]
        assert got["source"] == "environment $PORTKEY_BASE_URL"
        dry = run_cli("replay", str(handoff), "--dry-run", "--portkey-url", "http://127.0.0.1:9/v1")
    assert "127.0.0.1" in dry.stderr and "from-env" not in dry.stderr + dry.stdout


def test_the_file_sets_what_the_command_runs_with(tmp_path: Path) -> None:
    handoff = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(handoff), "-q").code == 0
    with portkey_stub() as pk:
        config_file(f'[replay]\nportkey_url = "{pk.url}"\nconcurrency = 2\n')
        with environment(PORTKEY_API_KEY=API_KEY):
            sent = run_cli("replay", str(handoff), "-q")
        assert sent.code == ExitCode.OK, sent.stderr
        assert len(pk.state.stored) == 8


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[replay]\nconcurrency = 999\n", "[replay] concurrency: 999 is outside 1..64"),
        ("[replay]\nuncertain = 'maybe'\n", "'maybe' is not one of resend, skip"),
        ("[convert]\ndrop_coments = true\n", "did you mean drop_comments"),
        ("[convert]\ndrop_comments = 'yes'\n", "must be true or false"),
        ("[portkey]\nurl = 'x'\n", "unknown table [portkey]"),
        ("[replay\n", "not valid TOML"),
        ("[openwebui]\ntoken = 'sk-do-not-echo'\n", "a secret does not belong"),
        # read by convert, which has no --new-state: the line names no flag it lacks
        ("[replay]\nnew_state = true\n", "give it on the command line of the run"),
        ("[openwebui]\nthumbs_down_value = -5\n", "no command reads this key from [openwebui]"),
        ("[convert]\nconcurrency = 3\n", "no command reads this key from [convert]"),
        ("[replay]\nskip_approvals = true\n", "a one-run override does not belong"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_table_and_key(text: str, says: str) -> None:
    path = config_file(text)
    result = run_cli("convert", str(REAL_EXPORT), "--dry-run", "-q")
    assert result.code == ExitCode.USAGE
    assert says in result.stderr and str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "sk-do-not-echo" not in result.stderr


def test_a_key_another_command_reads_is_no_error_here() -> None:
    config_file("[replay]\nmin_approvals = 2\nconcurrency = 4\n")  # replay's; state reads ledger
    assert run_cli("state").code == ExitCode.OK


def test_config_never_shows_a_secret(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("pk-file-secret\n")
    config_file(f'[replay]\napi_key_file = "{key_file}"\n')
    with environment(PORTKEY_API_KEY="pk-env-secret", OPENWEBUI_TOKEN="owui-env-secret"):
        shown = run_cli("config")
        as_json = run_cli("config", "--json")
    for text in (shown.stdout, as_json.stdout, shown.stderr, as_json.stderr):
        for secret in ("pk-file-secret", "pk-env-secret", "owui-env-secret"):
            assert secret not in text
    assert "environment $PORTKEY_API_KEY" in shown.stdout


def test_the_file_is_found_by_option_anywhere_or_by_variable(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[replay]\nconcurrency = 3\n")
    after = run_cli("config", "replay", "--json", "--config", str(path))
    before = run_cli("--config", str(path), "config", "replay", "--json")
    assert after.stdout == before.stdout
    assert json.loads(after.stdout)["settings"]["replay"]["--concurrency"]["value"] == 3
    with environment(OWUI_REPLAY_CONFIG=str(path)):
        assert settings("replay")["replay"]["--concurrency"]["value"] == 3
    missing = run_cli("--config", str(tmp_path / "nope.toml"), "config")
    assert missing.code == ExitCode.USAGE and "nope.toml" in missing.stderr


def test_a_machine_with_allowed_signers_enforces_them_unless_told_out_loud(
    tmp_path: Path,
) -> None:
    handoff = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(handoff), "-q").code == 0
    signers = Path(os.environ["XDG_CONFIG_HOME"]) / "owui-replay" / "allowed_signers"
    signers.parent.mkdir(parents=True)
    signers.write_text("alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1\n")
    with portkey_stub() as pk, environment(PORTKEY_API_KEY=API_KEY):
        refused = run_cli("replay", str(handoff), "--portkey-url", pk.url, "-q")
        assert refused.code == ExitCode.NOT_APPROVED and pk.state.requests == 0
        sent = run_cli("replay", str(handoff), "--portkey-url", pk.url, "-q", "--skip-approvals")
        assert sent.code == ExitCode.OK and len(pk.state.stored) == 8
    assert "--skip-approvals: approvals are not checked" in sent.stderr
    assert str(signers) in sent.stderr
    with environment(OPENWEBUI_BASE_URL="http://127.0.0.1:9", OPENWEBUI_TOKEN=ADMIN_TOKEN):
        unattended = run_cli("sync", "--workdir", str(tmp_path / "w"), "-q")
    assert unattended.code == ExitCode.NOT_APPROVED
    assert "--skip-approvals" in unattended.stderr and "nobody signed" in unattended.stderr


def test_the_readmes_service_setup_runs_as_written(tmp_path: Path) -> None:
    """The config file README's unattended section writes is read by `config sync` as is."""
    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text("utf-8")
    block = readme.split("For unattended runs, install owui-replay once", 1)[1]
    toml = block.split("<<'TOML'\n", 1)[1].split("\nTOML\n", 1)[0]
    for name in ("openwebui-token", "portkey-key"):
        (tmp_path / name).write_text("sk-secret-value\n")
    path = config_file(toml.replace("/home/me/.config/owui-replay", str(tmp_path)))
    shown = settings("sync")["sync"]
    assert shown["--drop-comments"] == {"value": True, "source": f"config {path} [convert]"}
    assert shown["--openwebui-url"]["value"] == "https://openwebui.example.com"
    assert shown["--token-file"]["source"] == f"config {path} [openwebui]"
    cron = block.split("```cron\n", 1)[1].split("\n", 1)[0]
    assert "venv/bin/owui-replay sync || [ $? -eq 10 ]" in cron


def test_config_masks_a_password_in_a_url_and_names_an_unreadable_file(tmp_path: Path) -> None:
    config_file('[replay]\nportkey_url = "https://u:pk-SUPERSECRET123@api.example.com/v1"\n')
    shown = run_cli("config", "replay")
    as_json = run_cli("config", "replay", "--json")
    assert "SUPERSECRET" not in shown.stdout + as_json.stdout
    assert "https://u:***@api.example.com/v1" in shown.stdout
    path = config_file("")
    path.write_bytes(b"\xff\xfe[convert]\n")
    bad = run_cli("config")
    assert bad.code == ExitCode.USAGE and "not UTF-8" in bad.stderr and str(path) in bad.stderr
    path.unlink()
    path.mkdir()
    folder = run_cli("config")
    assert folder.code == ExitCode.USAGE and str(path) in folder.stderr
