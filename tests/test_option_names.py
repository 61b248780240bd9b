"""Messages name only options the command has (issue 21): library code names a setting by its
key (option_names.option) and the command that shows the message spells it as its own flag.

One test drives every subcommand's error paths as a user would (real processes, bad files,
refusing, silent, TLS-wrong and slow servers on 127.0.0.1, bad states, refusals) and checks
every `--flag` in what they print against the flags that subcommand registered; one reads the
library's source for a flag spelled outside the mechanism; one checks the Python API's words.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

import owui_replay as owr
from owui_replay.cli import build_parser, flag_namer, subcommand_parsers
from owui_replay.errors import ExitCode, ReplayError
from owui_replay.listen import start
from owui_replay.mapping import MappingOptions
from owui_replay.option_names import HANDOFF_FLAGS, SETTINGS
from owui_replay.secrets import Secret
from owui_replay.settings import ListenSettings, ReplaySettings
from tests.forked_cli import run_forked
from tests.helpers import REAL_EXPORT, ROOT, environment, run_cli
from tests.openwebui_live_stub import LiveServer, live_openwebui
from tests.openwebui_stub import ADMIN_TOKEN, USER_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, Fault, StubServer, portkey_stub, tls_portkey_stub
from tests.proxy_stub import closed_port
from tests.replay_helpers import make_feedback

PACKAGE = ROOT / "owui_replay"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMANDS = "|".join(subcommand_parsers(build_parser()))
ANOTHER_COMMAND = re.compile(rf"(?:owui-replay |\b)({COMMANDS})(?:'s)? (--[a-z][a-z0-9-]*)")
# text quoted from a handoff's rejects file (fixed bytes, whoever converts: option_names.py)
HANDOFF_TEXT = re.compile(r"needed by --trace-id|is (?:not )?before --(?:since|until)")
GLOBAL_FLAGS = {"--help", "--config", "--traceback", "--version"}
UNREACHABLE = "192.0.2.1"  # TEST-NET-1: never routed; refused by the URL check before any use


def registered() -> dict[str, set[str]]:
    """Each subcommand's flags, as argparse knows them."""
    parsers = subcommand_parsers(build_parser())
    return {
        name: {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        | GLOBAL_FLAGS
        for name, sub in parsers.items()
    }


FLAGS = registered()


def foreign_flags(command: str, text: str) -> set[str]:
    """Flags in TEXT that COMMAND does not have (`owui-replay OTHER --flag`: OTHER's)."""
    text = HANDOFF_TEXT.sub("", text)
    wrong = {
        f"{other} {flag}"
        for other, flag in ANOTHER_COMMAND.findall(text)
        if flag not in FLAGS[other]
    }
    rest = ANOTHER_COMMAND.sub("", text)
    return wrong | {flag for flag in FLAG.findall(rest) if flag not in FLAGS[command]}


@dataclass
class Case:
    argv: list[str]
    code: int  # the exit code that shows the path was taken
    says: str  # and a piece of its message
    env: dict[str, str] = field(default_factory=dict)
    scan: list[Path] = field(default_factory=list)  # files it writes that are messages too
    stop_after: float | None = None  # a server: stopped with SIGTERM after this many seconds


@dataclass
class Ran:
    case: Case
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr + "".join(p.read_text("utf-8") for p in self.case.scan)


def run_all(cases: list[Case], home: Path) -> list[Ran]:
    """Each case as a real process (forked from one that imported the package once)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PORTKEY_", "OPENWEBUI_", "OWUI_REPLAY_", "HTTP", "http"))
    }
    done = run_forked(
        [
            {  # each its own default state: runs at once must not hold one another's endpoint
                "argv": c.argv,
                "env": {**base, "NO_PROXY": "*", "XDG_STATE_HOME": str(home / f"xdg{i}"), **c.env},
                "cwd": str(home),
                "stop_after": c.stop_after,
            }
            for i, c in enumerate(cases)
        ]
    )
    return [Ran(c, d["code"], d["stdout"], d["stderr"]) for c, d in zip(cases, done, strict=True)]


@contextmanager
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Another sync's flock on PATH."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("pid 1 (another sync)")
        handle.flush()
        yield


def slow_export(seconds: float) -> Any:
    """Open WebUI that sends its headers, then nothing for SECONDS (a stalled download)."""

    def chunks() -> Iterator[bytes]:
        time.sleep(seconds)
        yield REAL_EXPORT.read_bytes()

    return chunks


def delivered_then_older(tmp: Path, url: str) -> tuple[Path, Path]:
    """A rating delivered, and a handoff with a change to it whose updated_at went back (no
    manifest: no export time says which is newer)."""
    state = tmp / "older.sqlite3"
    for name, value, updated_at in (("newer", 1, "200"), ("older", -1, "100")):
        (tmp / name).mkdir()
        line = {
            "trace_id": "c:m",
            "value": value,
            "weight": 1,
            "metadata": {"feedback_id": "fb-1", "updated_at": updated_at},
        }
        (tmp / name / "feedback.jsonl").write_text(json.dumps(line) + "\n", "utf-8")
    with environment(PORTKEY_API_KEY=API_KEY):
        done = run_cli(
            "replay",
            str(tmp / "newer" / "feedback.jsonl"),
            "--portkey-url",
            url,
            "--state-file",
            str(state),
            "-q",
        )
    assert done.code == 0, done.stderr
    return tmp / "older" / "feedback.jsonl", state


def listened_then_all_deleted(tmp: Path, live: LiveServer, portkey: StubServer) -> Path:
    """A listener's state that saw the real export's 8 ratings, all deleted since."""
    work = tmp / "listen"
    settings = ListenSettings(
        host="127.0.0.1",
        port=0,
        openwebui_url=live.url,
        mapping=MappingOptions(),
        workdir=work,
        replay=ReplaySettings(base_url=portkey.url, state_file=work / "ledger.sqlite3"),
    )
    for record in json.loads(REAL_EXPORT.read_text("utf-8")):
        live.owui.records[record["id"]] = record
    lines: list[str] = []
    running = start(settings, Secret(ADMIN_TOKEN, "test"), Secret(API_KEY, "test"), lines.append)
    try:
        end = time.monotonic() + 10
        while not any(line.startswith("reconciled:") for line in lines):
            assert time.monotonic() < end, lines
            time.sleep(0.02)
    finally:
        assert running.shutdown(grace=4.5)
    live.owui.delete_all()
    return work / "ledger.sqlite3"


def damage(state: Path, copy: Path) -> Path:
    """A copy of STATE whose pages after the first are overwritten: SQLite calls it malformed."""
    data = bytearray(state.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)
    copy.write_bytes(bytes(data))
    return copy


def convert(export: Path, output: Path) -> Path:
    assert run_cli("convert", str(export), "-o", str(output), "-q").code == 0
    return output


def approve(feedback: Path, key: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run_cli("approve", str(feedback), "--key", str(key)).code == 0


def handoffs(tmp: Path) -> dict[str, Path]:
    """Good, edited, other-version and signed handoffs; empty and wrong inputs."""
    files: dict[str, Path] = {}
    for name in ("good", "delivered", "refused", "edited", "other_version", "signed"):
        (tmp / name).mkdir()
        files[name] = convert(REAL_EXPORT, tmp / name / "feedback.jsonl")
    with open(files["edited"], "ab") as handle:
        handle.write(files["edited"].read_bytes().splitlines(keepends=True)[0])
    manifest = files["other_version"].with_name("feedback.manifest.json")
    doc = json.loads(manifest.read_text("utf-8"))
    doc["tool"]["version"] = "0.0.1"
    manifest.write_text(json.dumps(doc), "utf-8")
    approve(files["signed"], tmp / "auditor")
    files["empty"] = tmp / "empty.json"
    files["empty"].write_text("[]", "utf-8")
    files["bad_ca"] = tmp / "bad-ca.pem"
    files["bad_ca"].write_text("not a certificate\n", "utf-8")
    files["one_run"] = tmp / "one-run.toml"
    files["one_run"].write_text("[replay]\nnew_state = true\n", "utf-8")
    files["bad_toml"] = tmp / "bad.toml"
    files["bad_toml"].write_text("[replay\nstate_file = 1\n", "utf-8")
    files["signers"] = tmp / "config" / "owui-replay" / "allowed_signers"  # a machine's own
    files["signers"].parent.mkdir(parents=True)
    files["signers"].write_text("", "utf-8")
    return files


def test_no_command_names_an_option_it_does_not_have(tmp_path: Path) -> None:
    f = handoffs(tmp_path)
    good, edited = str(f["good"]), str(f["edited"])
    key = {"PORTKEY_API_KEY": API_KEY}
    token = {"OPENWEBUI_TOKEN": ADMIN_TOKEN}
    closed = f"http://127.0.0.1:{closed_port()}"
    ca = trustme.CA()
    with ExitStack() as stack:
        portkey = stack.enter_context(portkey_stub())
        slow = stack.enter_context(portkey_stub(faults=[Fault("slow", seconds=3)] * 4))
        moved = stack.enter_context(portkey_stub(redirect_to="http://127.0.0.1:9/v1"))
        tls = stack.enter_context(tls_portkey_stub(ca))
        owui = stack.enter_context(openwebui_stub(export_file=REAL_EXPORT))
        stalled = stack.enter_context(openwebui_stub(export_chunks=slow_export(4)))
        nothing = stack.enter_context(openwebui_stub(export_body=lambda *a: b"[]"))
        port = stack.enter_context(held_port())
        stack.enter_context(held_lock(tmp_path / "busy" / "sync.lock"))
        # a state that knows deliveries the next state does not (the journal beside the handoff)
        with environment(PORTKEY_API_KEY=API_KEY):
            first = tmp_path / "first.sqlite3"
        with environment(PORTKEY_API_KEY=API_KEY):
            done = run_cli(
                "replay",
                str(f["delivered"]),
                "--portkey-url",
                portkey.url,
                "--state-file",
                str(first),
                "-q",
            )
        assert done.code == 0, done.stderr
        damaged = damage(first, tmp_path / "damaged.sqlite3")
        refused_state = tmp_path / "refused.sqlite3"  # Portkey refused one line of "refused"
        refusing = stack.enter_context(portkey_stub(faults=[Fault("400")]))
        older, older_state = delivered_then_older(tmp_path, portkey.url)
        live = stack.enter_context(live_openwebui())
        listened = listened_then_all_deleted(tmp_path, live, portkey)
        with environment(PORTKEY_API_KEY=API_KEY):
            done = run_cli(
                "replay",
                str(f["refused"]),
                "--portkey-url",
                refusing.url,
                "--state-file",
                str(refused_state),
                "--concurrency",
                "1",
                "-q",
            )
            assert done.code == ExitCode.DELIVERY_FAILED, done.stderr
        sync_env = {**key, **token, "OPENWEBUI_BASE_URL": owui.url}
        workdirs = iter(range(100))

        def work() -> list[str]:  # each run its own work directory: no two share sync.lock
            return ["--workdir", str(tmp_path / f"work{next(workdirs)}")]

        report_page = tmp_path / "page.html"
        cases = [
            # convert, inspect
            Case(["convert", str(f["empty"]), "-o", "x.jsonl"], 3, "--allow-empty accepts it"),
            Case(["convert", good, "-o", "x.jsonl"], 3, "replay"),
            Case(["inspect", str(REAL_EXPORT), "--top", "1"], 0, "--top, or --json for all"),
            Case(["inspect", good], 3, "convert"),
            # verify, approve, report
            Case(["verify", edited], 6, "FAIL"),
            Case(["verify", str(f["other_version"])], 6, "--accept-other-version"),
            Case(["verify", str(f["signed"]), "--json"], 0, "--allowed-signers FILE"),
            Case(["verify", str(REAL_EXPORT)], 3, "convert"),
            Case(
                ["approve", str(f["signed"]), "--key", str(tmp_path / "auditor"), "--json"],
                0,
                "an allowed-signers file",
            ),
            Case(
                ["approve", str(f["other_version"]), "--key", str(tmp_path / "auditor")],
                6,
                "--accept-other-version",
            ),
            Case(
                ["report", str(f["signed"]), "-o", str(report_page), "-q"],
                0,
                "--allowed-signers",
                scan=[report_page],
            ),
            # replay: files, options, states, approvals
            Case(["replay", good, "--portkey-url", portkey.url], 2, "pass --api-key-file FILE"),
            Case(["replay", good, "--api-key-file", "nope"], 2, "--api-key-file nope: cannot"),
            Case(["replay", edited, "--portkey-url", portkey.url], 6, "--no-verify", key),
            Case(
                ["replay", good, "--portkey-url", portkey.url, "--start-offset", "99"],
                2,
                "--start-offset 99 is past the end",
                key,
            ),
            Case(
                [
                    "replay",
                    good,
                    "--portkey-url",
                    portkey.url,
                    "--no-verify",
                    "--allowed-signers",
                    str(f["signers"]),
                ],
                2,
                "drop --no-verify",
                key,
            ),
            Case(
                [
                    "replay",
                    str(f["delivered"]),
                    "--portkey-url",
                    portkey.url,
                    "--state-file",
                    str(tmp_path / "second.sqlite3"),
                ],
                12,
                "--new-state",
                key,
            ),
            Case(
                ["replay", good, "--portkey-url", f"http://{UNREACHABLE}/v1"],
                2,
                "--allow-insecure-http",
                key,
            ),
            Case(["replay", good, "--portkey-url", closed + "/v1"], 11, "--portkey-url", key),
            Case(
                ["replay", good, "--portkey-url", portkey.url + "/feedback"],
                7,
                f"--portkey-url {portkey.url}",
                key,
            ),
            Case(["replay", good, "--portkey-url", moved.url], 7, "as --portkey-url", key),
            Case(
                [
                    "replay",
                    good,
                    "--portkey-url",
                    tls.url.replace("http:", "https:"),
                ],
                4,
                "--ca-bundle PATH",
                key,
            ),
            Case(
                ["replay", good, "--portkey-url", slow.url, "--timeout", "0.5", "--retries", "0"],
                4,
                "--timeout",
                key,
            ),
            Case(["replay", good, "--ca-bundle", str(f["bad_ca"])], 2, "--ca-bundle", key),
            Case(
                ["replay", good, "--portkey-url", portkey.url, "--state-file", str(damaged)],
                13,
                "owui-replay state --backup",
                key,
            ),
            Case(["replay", str(REAL_EXPORT)], 3, "convert", key),
            Case(
                [
                    "replay",
                    str(older),
                    "--portkey-url",
                    portkey.url,
                    "--state-file",
                    str(older_state),
                ],
                4,  # a changed rating not sent is not success
                "--send-older sends them",
                key,
            ),
            Case(["replay", str(f["signed"]), "--allowed-signers", str(f["signers"])], 9, "", key),
            Case(
                [
                    "replay",
                    str(f["refused"]),
                    "--portkey-url",
                    refusing.url,
                    "--state-file",
                    str(refused_state),
                ],
                0,
                "--retry-refused sends them again",
                key,
            ),
            Case(
                [
                    "replay",
                    str(f["refused"]),
                    "--portkey-url",
                    refusing.url,
                    "--state-file",
                    str(refused_state),
                    "--dry-run",
                ],
                0,
                "--retry-refused sends them again",
                key,
            ),
            Case(
                ["sync", *work(), "--portkey-url", portkey.url],
                9,
                "--skip-approvals",
                {**sync_env, "XDG_CONFIG_HOME": str(f["signers"].parent.parent)},
            ),
            # download
            Case(["download", "-o", "e.json", "--openwebui-url", owui.url], 2, "--token-file"),
            Case(
                ["download", "-o", "e.json", "--openwebui-url", owui.url],
                5,
                "--user-scope",
                {"OPENWEBUI_TOKEN": USER_TOKEN},
            ),
            Case(
                ["download", "-o", "e.json", "--openwebui-url", stalled.url, "--timeout", "1"],
                11,
                "--timeout",
                token,
            ),
            Case(
                ["download", "-o", "e.json", "--openwebui-url", tls.url.replace("http:", "https:")],
                11,
                "--ca-bundle PATH",
                token,
            ),
            Case(
                [
                    "download",
                    "-o",
                    "e.json",
                    "--openwebui-url",
                    owui.url,
                    "--ca-bundle",
                    str(f["bad_ca"]),
                ],
                2,
                "--ca-bundle",
                token,
            ),
            # sync: both servers, its own spellings
            Case(["sync", *work(), "--portkey-url", closed + "/v1"], 11, "--portkey-url", sync_env),
            Case(
                ["sync", *work(), "--portkey-url", portkey.url + "/feedback"],
                7,
                "--portkey-url",
                sync_env,
            ),
            Case(
                [
                    "sync",
                    *work(),
                    "--portkey-url",
                    portkey.url,
                    "--openwebui-url",
                    stalled.url,
                    "--download-timeout",
                    "1",
                ],
                11,
                "--download-timeout",
                sync_env,
            ),
            Case(
                ["sync", *work(), "--portkey-url", portkey.url],
                5,
                "--user-scope",
                {**sync_env, "OPENWEBUI_TOKEN": USER_TOKEN},
            ),
            Case(
                ["sync", "--workdir", str(tmp_path / "busy"), "--portkey-url", portkey.url],
                8,
                "--wait",
                sync_env,
            ),
            Case(
                ["sync", *work(), "--portkey-url", portkey.url, "--openwebui-url", nothing.url],
                10,
                "",
                sync_env,
            ),
            Case(
                ["sync", *work(), "--portkey-url", portkey.url, "--state-file", str(damaged)],
                13,
                "owui-replay state --backup",
                sync_env,
            ),
            Case(
                ["sync", *work(), "--portkey-url", portkey.url, "--ca-bundle", str(f["bad_ca"])],
                2,
                "--ca-bundle",
                sync_env,
            ),
            Case(["sync", *work(), "--api-key-file", "nope"], 2, "--api-key-file", sync_env),
            # listen
            Case(
                ["listen", *work(), "--portkey-url", portkey.url, "--listen", f"127.0.0.1:{port}"],
                2,
                f"--listen 127.0.0.1:{port}",
                sync_env,
            ),
            Case(
                [
                    "listen",
                    *work(),
                    "--portkey-url",
                    portkey.url,
                    "--secret-file",
                    "nope",
                    "--listen",
                    "127.0.0.1:0",
                ],
                2,
                "--secret-file nope",
                sync_env,
            ),
            Case(
                [
                    "listen",
                    "--workdir",
                    str(listened.parent),
                    "--state-file",
                    str(listened),
                    "--portkey-url",
                    portkey.url,
                    "--openwebui-url",
                    live.url,
                    "--listen",
                    "127.0.0.1:0",
                    "--max-withdraw",
                    "2",
                ],
                130,
                "more than --max-withdraw 2",
                {**key, **token},
                stop_after=4,
            ),
            # state, config, completion
            Case(["state", "--state-file", str(damaged)], 13, "state --backup"),
            Case(["state", "--state-file", str(first), "--forget", "http://127.0.0.1:1/v1"], 0, ""),
            Case(["config", "--config", str(f["bad_toml"])], 2, "bad.toml"),
            Case(["completion", "tcsh"], 2, "invalid choice"),
            Case(
                ["convert", str(REAL_EXPORT), "--dry-run", "--config", str(f["one_run"])],
                2,
                "give it on the command line",
            ),
            Case(
                ["replay", good, "--config", str(f["one_run"])], 2, "give --new-state on the", key
            ),
            Case(
                ["replay", good, "--portkey-url", portkey.url, "--withdraw-missing", "--no-verify"],
                2,
                "drop --no-verify",
                key,
            ),
        ]
        ran = run_all(cases, tmp_path)
    problems = []
    for r in ran:
        command = r.case.argv[0]
        if r.code != r.case.code or r.case.says not in r.text:
            problems.append(
                f"{r.case.argv}: exit {r.code}, wanted {r.case.code} and "
                f"{r.case.says!r}:\n{r.stderr}{r.stdout[:300]}"
            )
        wrong = foreign_flags(command, r.text)
        if wrong:
            problems.append(f"{command} names {sorted(wrong)} it does not have:\n{r.stderr}")
    assert not problems, "\n\n".join(problems)


def spelled_flags(path: Path) -> list[str]:
    """`--flags` in PATH's string literals, docstrings and other bare strings left out."""
    tree = ast.parse(path.read_text("utf-8"))
    bare = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    help_texts = {  # shown by --help, not messages
        id(value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "EXIT_CODE_HELP" for t in node.targets)
        for value in ast.walk(node.value)
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in bare | help_texts
            and "CREATE TABLE" not in node.value  # SQL, whose comments start with --
        ):
            found += [
                f"{path.name}:{node.lineno}: {flag}"
                for flag in FLAG.findall(node.value)
                if flag not in GLOBAL_FLAGS
            ]
        if isinstance(node, ast.JoinedStr):  # f"--{name}": a flag spelled from a variable
            found += [
                f"{path.name}:{node.lineno}: --{{...}}"
                for piece, after in zip(node.values, node.values[1:], strict=False)
                if isinstance(piece, ast.Constant)
                and re.search(r"(?<![\w-])--$", str(piece.value))
                and isinstance(after, ast.FormattedValue)
            ]
    return found


def test_no_library_string_spells_a_flag_outside_option_names() -> None:
    library = sorted(set(PACKAGE.glob("*.py")) - {PACKAGE / "cli.py", PACKAGE / "option_names.py"})
    assert len(library) > 40
    spelled = [hit for path in library for hit in spelled_flags(path)]
    assert not spelled, "name these with option_names.option():\n" + "\n".join(spelled)


def test_every_setting_a_message_names_is_known() -> None:
    """option("typo") would raise KeyError in the middle of an error: catch it here."""
    keys = {"option": set(SETTINGS), "handoff_option": set(HANDOFF_FLAGS)}
    used = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in keys
            ):
                first = node.args[0]
                if not isinstance(first, ast.Constant):  # a key passed in: checked where given
                    continue
                used.append(first.value)
                assert first.value in keys[node.func.id], f"{path.name}:{node.lineno}"
    assert len(used) > 40
    parsers = subcommand_parsers(build_parser())
    for key in SETTINGS:  # and each is some command's flag: no words stand in for a typo
        assert any(flag_namer(sub, name)(key) for name, sub in parsers.items()), key


def test_the_python_api_names_arguments_not_flags(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub() as stub:
        settings = owr.ReplaySettings(base_url=stub.url + "/feedback", state_file=tmp_path / "s")
        result = owr.replay(feedback, settings, api_key=API_KEY)
    assert result.exit_code == ExitCode.ENDPOINT
    assert f"e.g. base_url={stub.url}" in str(result.stop_message())
    with pytest.raises(ReplayError, match=r"allow_insecure_http=True if you really"):
        owr.ReplaySettings(base_url=f"http://{UNREACHABLE}/v1")
    with pytest.raises(ReplayError, match=r"^file=nope: cannot read"):
        owr.portkey_key("nope")
    with pytest.raises(ReplayError, match=r"allow_empty=True accepts it"):
        owr.convert(handoffs_empty(tmp_path), tmp_path / "out.jsonl")
    closed = owr.replay(
        feedback,
        owr.ReplaySettings(base_url=f"http://127.0.0.1:{closed_port()}/v1", new_state=True),
        api_key=API_KEY,
    )
    assert closed.exit_code == ExitCode.NETWORK
    assert "(base_url, $PORTKEY_BASE_URL)" in str(closed.stop_message())


def handoffs_empty(tmp: Path) -> Path:
    path = tmp / "empty.json"
    path.write_text("[]", "utf-8")
    return path
