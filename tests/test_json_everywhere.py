"""Every `--json` output is one JSON document on stdout, dry runs included (issue 21).

Each command that has --json runs in each of its modes and on a failing input, as a real
process. A run that has a result prints exactly one JSON document on stdout, whatever its exit
code (a replay that stopped early, a verify that found a mismatch, a sync with nothing new).
A command stopped by an error before it had a result prints nothing on stdout, as gh and pip
do with their JSON output; the error is its one line on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

from owui_replay.cli import build_parser, subcommand_parsers
from tests.forked_cli import run_forked
from tests.helpers import REAL_EXPORT, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, Fault, portkey_stub
from tests.proxy_stub import closed_port


def commands_with_json() -> set[str]:
    return {
        name
        for name, sub in subcommand_parsers(build_parser()).items()
        if any("--json" in a.option_strings for a in sub._actions)
    }


def test_every_json_output_is_one_document_on_stdout(tmp_path: Path) -> None:
    handoff = tmp_path / "h" / "feedback.jsonl"
    handoff.parent.mkdir()
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(handoff), "-q").code == 0
    edited, delivered = tmp_path / "edited.jsonl", tmp_path / "delivered.jsonl"
    for copy in ("edited", "delivered", "fresh"):  # each with its own journal beside it
        for suffix in (".jsonl", ".rejects.jsonl", ".manifest.json"):
            source = handoff.with_name("feedback" + suffix)
            (tmp_path / (copy + suffix)).write_bytes(source.read_bytes())
    with open(edited, "ab") as handle:
        handle.write(handoff.read_bytes().splitlines(keepends=True)[0])
    key = tmp_path / "auditor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[replay\n", "utf-8")
    state = tmp_path / "state.sqlite3"
    missing = str(tmp_path / "missing.json")
    closed = f"http://127.0.0.1:{closed_port()}/v1"
    with ExitStack() as stack:
        portkey = stack.enter_context(portkey_stub())
        refusing = stack.enter_context(portkey_stub(faults=[Fault("400")]))
        owui = stack.enter_context(openwebui_stub(export_file=REAL_EXPORT))
        empty = stack.enter_context(openwebui_stub(export_body=lambda *a: b"[]"))
        stack.enter_context(environment(PORTKEY_API_KEY=API_KEY))
        assert (
            run_cli(
                "replay",
                str(delivered),
                "--portkey-url",
                portkey.url,
                "--state-file",
                str(state),
                "-q",
            ).code
            == 0
        )
        copies = [tmp_path / f"state{i}.sqlite3" for i in range(3)]  # one per changing run
        for copy in copies:
            shutil.copyfile(state, copy)
        env = {"PORTKEY_API_KEY": API_KEY, "OPENWEBUI_TOKEN": ADMIN_TOKEN}
        sync = ["sync", "--openwebui-url", owui.url, "--portkey-url", portkey.url]
        runs: list[tuple[list[str], bool]] = [  # (argv, whether it has a result to print)
            (["convert", str(REAL_EXPORT), "-o", str(tmp_path / "c.jsonl")], True),
            (["convert", str(REAL_EXPORT), "--dry-run"], True),
            (["convert", missing, "-o", str(tmp_path / "m.jsonl")], False),
            (
                [
                    "replay",
                    str(handoff),
                    "--portkey-url",
                    portkey.url,
                    "--state-file",
                    str(tmp_path / "r.sqlite3"),
                ],
                True,
            ),
            (
                [
                    "replay",
                    str(tmp_path / "fresh.jsonl"),
                    "--portkey-url",
                    portkey.url,
                    "--dry-run",
                ],
                True,
            ),
            (
                [
                    "replay",
                    str(delivered),
                    "--portkey-url",
                    portkey.url,
                    "--state-file",
                    str(state),
                    "--dry-run",
                ],
                True,
            ),
            (
                [
                    "replay",
                    str(handoff),
                    "--portkey-url",
                    refusing.url,
                    "--state-file",
                    str(tmp_path / "refused.sqlite3"),
                    "--concurrency",
                    "1",
                ],
                True,
            ),
            (
                [
                    "replay",
                    str(handoff),
                    "--portkey-url",
                    closed,
                    "--state-file",
                    str(tmp_path / "closed.sqlite3"),
                ],
                True,
            ),
            (["replay", str(tmp_path / "missing.jsonl"), "--portkey-url", portkey.url], False),
            ([*sync, "--workdir", str(tmp_path / "w1")], True),
            ([*sync, "--workdir", str(tmp_path / "w2"), "--dry-run"], True),
            ([*sync, "--workdir", str(tmp_path / "w3"), "--dry-run", "--samples", "3"], True),
            (
                [
                    "sync",
                    "--openwebui-url",
                    empty.url,
                    "--portkey-url",
                    portkey.url,
                    "--workdir",
                    str(tmp_path / "w4"),
                ],
                True,
            ),
            (
                [
                    "sync",
                    "--openwebui-url",
                    owui.url,
                    "--portkey-url",
                    closed,
                    "--workdir",
                    str(tmp_path / "w5"),
                ],
                True,
            ),
            ([*sync, "--workdir", str(tmp_path / "w6"), "--api-key-file", missing], False),
            (["verify", str(handoff)], True),
            (["verify", str(handoff), "--export", str(REAL_EXPORT)], True),
            (["verify", str(edited)], True),
            (["verify", missing], False),
            (["approve", str(handoff), "--key", str(key)], True),
            (["approve", str(edited), "--key", str(key)], True),
            (["approve", str(handoff), "--key", missing], False),
            (["download", "-o", str(tmp_path / "d.json"), "--openwebui-url", owui.url], True),
            (["download", "-o", str(tmp_path / "e.json"), "--openwebui-url", closed], False),
            (["inspect", str(REAL_EXPORT)], True),
            (["inspect", missing], False),
            (["state", "--state-file", str(state)], True),
            (["state", "--state-file", str(copies[0]), "--prune"], True),
            (["state", "--state-file", str(copies[1]), "--forget", portkey.url], True),
            (["state", "--state-file", str(copies[2]), "--backup", str(tmp_path / "b")], True),
            (["state", "--state-file", str(bad_toml)], False),
            (["config"], True),
            (["config", "sync"], True),
            (["--config", str(bad_toml), "config"], False),
        ]
        results = run_forked(
            [
                {
                    "argv": [*argv, "--json"],
                    "env": {**os.environ, **env, "XDG_STATE_HOME": str(tmp_path / f"x{i}")},
                    "cwd": str(tmp_path),
                }
                for i, (argv, _) in enumerate(runs)
            ]
        )
    assert {argv[2] if argv[0] == "--config" else argv[0] for argv, _ in runs} == (
        commands_with_json()
    )
    problems = []
    for (argv, has_result), done in zip(runs, results, strict=True):
        said = f"{argv} exit {done['code']}:\nstdout {done['stdout'][:400]!r}\n{done['stderr']}"
        if not has_result:
            if done["stdout"] or done["code"] == 0 or not done["stderr"]:
                problems.append("an error, wanted nothing on stdout: " + said)
            continue
        try:
            doc = json.loads(done["stdout"])
        except ValueError as exc:
            problems.append(f"not one JSON document ({exc}): {said}")
            continue
        if not isinstance(doc, dict) or doc.get("exit_code", done["code"]) != done["code"]:
            problems.append(f"not one object with the exit code: {said}")
    assert not problems, "\n\n".join(problems)
    forget = next(d for (a, _), d in zip(runs, results, strict=True) if "--forget" in a)
    assert json.loads(forget["stdout"])["forgotten"][portkey.url]["delivered"] == 8
