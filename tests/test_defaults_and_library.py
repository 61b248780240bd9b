"""Each default lives once, in the library's option types; the library reads the environment
as the command line does; unattended runs treat an empty server as nothing new."""

from __future__ import annotations

import json
from pathlib import Path

import owui_replay as owr
from owui_replay.cli import build_parser, replay_settings
from owui_replay.errors import ExitCode
from owui_replay.settings import DeliveryOptions, ReplaySettings, SyncSettings
from tests.helpers import REAL_EXPORT, environment, run_cli
from tests.portkey_stub import API_KEY, portkey_stub
from tests.replay_helpers import chain


def test_the_command_lines_defaults_are_the_librarys() -> None:
    args = build_parser().parse_args(["replay", "f.jsonl"])
    from_cli = replay_settings(args)
    assert from_cli.delivery == DeliveryOptions()
    assert (from_cli.timeout, from_cli.uncertain) == (ReplaySettings.timeout, "resend")
    assert args.start_offset == ReplaySettings.start_offset
    assert args.min_approvals == ReplaySettings.min_approvals
    sync = build_parser().parse_args(["sync"])
    assert (sync.keep, sync.download_timeout) == (SyncSettings.keep, SyncSettings.download_timeout)
    assert (
        build_parser().parse_args(["convert", "e.json"]).trace_id
        == owr.MappingOptions().trace_template
    )


def test_the_store_has_one_name_and_the_older_spelling_still_works() -> None:
    for command in ("replay", "state"):
        given = [command, *(["f.jsonl"] if command == "replay" else [])]
        new = build_parser().parse_args([*given, "--state-file", "s.sqlite3"])
        old = build_parser().parse_args([*given, "--ledger", "s.sqlite3"])
        assert new.state_file == old.state_file == "s.sqlite3"
    args = build_parser().parse_args(["replay", "f.jsonl", "--ledger", "s.sqlite3"])
    assert replay_settings(args).state_file == Path("s.sqlite3")


def test_help_shows_the_librarys_default_values() -> None:
    shown = run_cli("replay", "--help").stdout
    assert f"(default {DeliveryOptions.concurrency})" in shown
    assert f"(default {DeliveryOptions.retries})" in shown
    assert "%(default)" not in shown


def test_the_library_reads_portkey_base_url_as_the_command_line_does(tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    owr.convert(REAL_EXPORT, out)
    with portkey_stub() as pk, environment(PORTKEY_BASE_URL=pk.url, PORTKEY_API_KEY=API_KEY):
        result = owr.replay(out)
        plan = owr.dry_run(out)
        assert result.exit_code == ExitCode.OK and len(pk.state.stored) == 8
    assert (
        plan.plan.endpoint == result.plan.endpoint == owr.ReplaySettings(base_url=pk.url).base_url
    )


def test_the_library_syncs_from_the_environment_alone(tmp_path: Path) -> None:
    with chain(tmp_path, json.loads(REAL_EXPORT.read_text())) as (pk, _owui, _export):
        result = owr.sync()
        assert result.exit_code == ExitCode.OK and len(pk.state.stored) == 8
        again = owr.sync()
    assert again.exit_code == ExitCode.NOTHING_NEW


def test_sync_against_a_server_nobody_rated_on_yet_is_nothing_new(tmp_path: Path) -> None:
    with chain(tmp_path, []) as (pk, _owui, _export):
        first = run_cli("sync", "--workdir", str(tmp_path / "w"))
        assert pk.state.requests == 0
    assert first.code == ExitCode.NOTHING_NEW, first.stderr
    assert "error" not in first.stderr


def test_every_dry_run_with_json_prints_one_json_document(tmp_path: Path) -> None:
    with chain(tmp_path, json.loads(REAL_EXPORT.read_text())) as (pk, _owui, _export):
        synced = run_cli("sync", "--workdir", str(tmp_path / "w"), "--dry-run", "--json")
    out = tmp_path / "f.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    converted = run_cli("convert", str(REAL_EXPORT), "--dry-run", "--json")
    replayed = run_cli("replay", str(out), "--dry-run", "--json", "--portkey-url", pk.url)
    for run in (synced, converted, replayed):
        assert run.code in (ExitCode.OK, ExitCode.NOTHING_NEW), run.stderr
        assert isinstance(json.loads(run.stdout), dict)


def test_a_failed_sync_under_cron_says_one_line(tmp_path: Path) -> None:
    records = json.loads(REAL_EXPORT.read_text())
    with chain(tmp_path, records) as _, environment(PORTKEY_API_KEY="not-the-key"):
        refused = run_cli("sync", "--workdir", str(tmp_path / "w"))
    assert refused.code == ExitCode.AUTH
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_the_wrong_kind_of_file_is_named_with_the_command_that_takes_it(tmp_path: Path) -> None:
    jsonl = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(jsonl), "-q").code == 0
    for command in ("replay", "verify"):
        got = run_cli(command, str(REAL_EXPORT), "--dry-run" if command == "replay" else "--json")
        assert got.code == ExitCode.BAD_INPUT
        assert "an Open WebUI feedback export: `owui-replay convert`" in got.stderr
        assert len(got.stderr.strip().splitlines()) == 1
    for command in ("convert", "inspect"):
        got = run_cli(command, str(jsonl), *(["--dry-run"] if command == "convert" else []))
        assert got.code == ExitCode.BAD_INPUT
        assert "a feedback JSONL made by convert: `owui-replay replay`" in got.stderr
