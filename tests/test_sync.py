"""sync: the whole chain in one command, against both stand-ins, with the cookbook's interface."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, ROOT, Run, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, USER_ID, USER_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub
from tests.replay_helpers import chain, serve, uncertain_resent


def thumbs() -> list[dict[str, Any]]:
    """The real export's records that convert writes (8 of them)."""
    return [r for r in json.loads(REAL_EXPORT.read_text()) if r.get("snapshot")]


def sync(workdir: Path, *args: str) -> Run:
    return run_cli("sync", "--workdir", str(workdir), *args)


def test_first_run_delivers_then_one_put_and_two_posts_then_nothing_new(tmp_path: Path) -> None:
    records = thumbs()
    workdir = tmp_path / "work"
    with chain(tmp_path, records[:6]) as (pk, _owui, export):
        first = sync(workdir)
        assert first.code == ExitCode.OK, first.stderr
        assert len(pk.state.stored) == 6
        later = copy.deepcopy(records)
        later[2]["data"]["rating"] = -later[2]["data"]["rating"]  # one flipped
        later[2]["updated_at"] += 600
        serve(export, later)  # and two new ratings
        second = sync(workdir, "--json")
        assert second.code == ExitCode.OK, second.stderr
        assert len(pk.state.stored) == 8 and len(pk.state.updates) == 1
        assert set(pk.state.feedback_counts().values()) == {1}
        third = sync(workdir)
        assert third.code == ExitCode.NOTHING_NEW, third.stderr
        assert pk.state.requests == 9
    doc = json.loads(second.stdout)
    assert doc["outcome"] == "delivered" and doc["replay"]["posted"] == 2
    assert doc["replay"]["updated"] == 1 and doc["replay"]["by_state"]["delivered"] == 5
    runs = sorted((workdir / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:  # the same audit trail as the manual chain
        for name in ("export.json", "export.json.sha256", "feedback.jsonl",
                     "feedback.rejects.jsonl", "feedback.manifest.json", "sync.json"):  # fmt: skip
            assert (run / name).is_file(), (run, name)
    assert json.loads((runs[1] / "sync.json").read_text()) == doc
    assert first.stderr == "" and third.stderr == ""  # quiet when not on a terminal


def test_dry_run_sends_nothing_and_prints_the_plan(tmp_path: Path) -> None:
    with chain(tmp_path, thumbs()) as (pk, _owui, _export):
        with environment(PORTKEY_API_KEY=""):  # a dry run needs no Portkey key
            plan = sync(tmp_path / "work", "--dry-run", "--samples", "1", "--verbose")
        assert plan.code == ExitCode.OK, plan.stderr
        assert pk.state.requests == 0
    assert '"trace_id"' in plan.stdout  # a sample payload
    assert f"{pk.url}: 8 lines, would POST 8, PUT 0, already delivered: 0" in plan.stderr
    (run,) = (tmp_path / "work" / "runs").iterdir()
    assert run.name.endswith("-dry-run")


def test_keep_prunes_old_runs(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    with chain(tmp_path, thumbs()):
        codes = [sync(workdir, "--keep", "2").code for _ in range(4)]
    assert codes == [ExitCode.OK] + [ExitCode.NOTHING_NEW] * 3
    assert len(list((workdir / "runs").iterdir())) == 2


def sync_process(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "owui_replay", "sync", "--workdir", str(workdir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def env_for(pk: Any, owui: Any) -> dict[str, str]:
    return {
        "OPENWEBUI_BASE_URL": owui.url,
        "OPENWEBUI_TOKEN": ADMIN_TOKEN,
        "PORTKEY_API_KEY": API_KEY,
        "PORTKEY_BASE_URL": pk.url,
    }


def test_a_killed_sync_run_again_loses_nothing_and_announces_its_uncertain_lines(
    tmp_path: Path,
) -> None:
    records = thumbs()
    for n in range(40):  # more ratings, so the kill lands mid-replay
        extra = copy.deepcopy(records[n % len(records)])
        extra["id"] = f"extra-{n:03d}"
        extra["meta"]["message_id"] = f"m-{n}"
        records.append(extra)
    holder: dict[str, subprocess.Popen[str]] = {}

    def kill_at_tenth(phase: str, body: Any) -> None:
        process = holder.get("process")
        if phase == "stored" and process is not None and len(stored) == 10:
            process.send_signal(signal.SIGKILL)

    workdir = tmp_path / "work"
    export = serve(tmp_path / "served.json", records)
    with (
        portkey_stub(latency=0.01, hook=kill_at_tenth) as pk,
        openwebui_stub(export_file=export) as owui,
    ):
        stored = pk.state.stored
        process = sync_process(workdir, env_for(pk, owui), "--concurrency", "2")
        holder["process"] = process
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
        holder.clear()
        again = sync_process(workdir, env_for(pk, owui), "--verbose")
        _, second_err = again.communicate(timeout=60)
        assert again.returncode == ExitCode.OK, second_err
        counts = pk.state.feedback_counts()
    expected = {r["id"] for r in records if r.get("meta", {}).get("chat_id") or r.get("snapshot")}
    assert set(counts) == expected  # nothing lost
    duplicates = sum(n - 1 for n in counts.values())
    announced = uncertain_resent(second_err)
    assert announced >= 1 and duplicates <= announced
    assert "uncertain resent" in second_err.splitlines()[0]  # said before sending


@pytest.mark.parametrize("wait", [False, True], ids=["exit-8", "wait"])
def test_two_overlapping_runs_never_send_a_rating_twice(tmp_path: Path, wait: bool) -> None:
    workdir = tmp_path / "work"
    export = serve(tmp_path / "served.json", thumbs())
    with portkey_stub(latency=0.3) as pk, openwebui_stub(export_file=export) as owui:
        env = env_for(pk, owui)
        first = sync_process(workdir, env, "--concurrency", "1")
        deadline = time.monotonic() + 20
        while not pk.state.requests and time.monotonic() < deadline:
            time.sleep(0.01)  # the first run is sending now
        second = sync_process(workdir, env, *(["--wait"] if wait else []))
        _, second_err = second.communicate(timeout=60)
        _, first_err = first.communicate(timeout=60)
        counts = pk.state.feedback_counts()
    assert first.returncode == ExitCode.OK, first_err
    assert len(counts) == 8 and set(counts.values()) == {1}
    if wait:
        assert second.returncode == ExitCode.NOTHING_NEW, second_err
    else:
        assert second.returncode == ExitCode.BUSY
        assert "another sync holds" in second_err and "pid" in second_err


def wrapper(tmp_path: Path) -> dict[str, str]:
    """`owui-replay` on PATH as a user has it, running this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "owui-replay"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m owui_replay "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


COOKBOOK_LINES = [  # the cookbook's documented command lines, script name swapped
    "owui-replay sync --dry-run",
    "owui-replay sync --since $( date -d '2 hours ago' +%s )",
    "owui-replay sync --since $( date -d '2 hours ago' +%s 2> /dev/null || python - << 'PY'\n"
    "import time\nprint(int(time.time() - 7200))\nPY\n)",
    "owui-replay sync",
]


def test_the_cookbooks_command_lines_work_unchanged(tmp_path: Path) -> None:
    records = thumbs()
    now = int(time.time())
    for i, record in enumerate(records):  # half rated in the last hour, half last month
        record["updated_at"] = now - 3600 if i % 2 else now - 30 * 86400
    export = serve(tmp_path / "served.json", records)
    user_items = copy.deepcopy(records[:3])
    for item in user_items:  # the user endpoint: the caller's ratings, no snapshot
        item["user_id"] = USER_ID
        item["meta"]["chat_id"] = item["snapshot"]["chat"]["id"]
        del item["snapshot"]
    with portkey_stub() as pk, openwebui_stub(export_file=export, user_items=user_items) as owui:
        env = {**os.environ, **env_for(pk, owui), **wrapper(tmp_path)}
        env["XDG_STATE_HOME"] = str(tmp_path / "state")
        results = []
        for line in COOKBOOK_LINES:
            done = subprocess.run(
                ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60
            )
            results.append((line, done.returncode, len(pk.state.stored), done.stderr))
        user_env = {**env, "OPENWEBUI_TOKEN": USER_TOKEN}
        user_line = "owui-replay sync --user-scope --since $( date -d '1 hour ago' +%s )"
        user = subprocess.run(
            ["bash", "-c", user_line.replace("1 hour", "2 hours")],
            env={**user_env, "PORTKEY_BASE_URL": pk.url + "/"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        stored = list(pk.state.stored)
        updates = list(pk.state.updates)
    assert [(code, n) for _, code, n, _ in results] == [
        (ExitCode.OK, 0),  # dry run: nothing sent
        (ExitCode.OK, 4),  # the 4 rated within two hours
        (ExitCode.NOTHING_NEW, 4),  # the same window again: no duplicate
        (ExitCode.OK, 8),  # everything: the 4 older ones now
    ], results
    # the same ratings to the same endpoint (another spelling of its URL): no POST; the user
    # endpoint has no snapshot, so their metadata differs and they are updated in place
    assert user.returncode == ExitCode.OK, user.stderr
    assert len(stored) == 8 and len({p["metadata"]["feedback_id"] for _, p in stored}) == 8
    assert sorted(b["metadata"]["feedback_id"] for _, b in updates) == sorted(
        r["id"] for r in user_items if r["updated_at"] > now - 7200
    )
    runs = list((tmp_path / "state" / "owui-replay" / "sync" / "runs").iterdir())
    assert len(runs) == 5  # the default work directory under the user's state directory
