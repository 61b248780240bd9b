"""Run many owui-replay command lines as real processes without paying the imports each time.

A test that walks fifty error paths spent most of a minute importing requests and jsonschema
fifty times. Here one driver process imports the package once, then forks a child per command
line: each child has its own environment, working directory, stdout and stderr (real file
descriptors) and exit code, exactly as `owui-replay ...` would, and nothing it does reaches the
driver or the next child. Used as `python -m tests.forked_cli CASES.json RESULTS.json`, through
`run_forked()`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARALLEL = 4


def run_forked(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CASES: {argv, env, cwd, and stop_after: seconds for a command that runs until
    stopped}; returns {code, stdout, stderr} for each, in order."""
    with tempfile.TemporaryDirectory() as folder:
        given, results = Path(folder) / "cases.json", Path(folder) / "results.json"
        given.write_text(json.dumps(cases), "utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-m", "tests.forked_cli", str(given), str(results)],
            check=True, cwd=ROOT, env=env, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        answer: list[dict[str, Any]] = json.loads(results.read_text("utf-8"))
        return answer


def _child(case: dict[str, Any], out: str, err: str) -> None:
    """In the forked child: become `owui-replay ARGV` and exit with its code."""
    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        from owui_replay.cli import main

        code = main(case["argv"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _drive(cases: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    running: dict[int, tuple[int, float]] = {}  # pid -> (case index, when to stop it)
    codes: dict[int, int] = {}
    pending = list(range(len(cases)))
    while pending or running:
        while pending and len(running) < PARALLEL:
            index = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(cases[index], str(folder / f"{index}.out"), str(folder / f"{index}.err"))
            stop = cases[index].get("stop_after")  # a server: SIGTERM it then, as systemd would
            running[pid] = (index, time.monotonic() + stop if stop else float("inf"))
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for child, (_, stop) in running.items():
                if now >= stop:
                    os.kill(child, signal.SIGTERM)
                    running[child] = (running[child][0], float("inf"))
            time.sleep(0.01)
            continue
        codes[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
    return [
        {
            "code": codes[i],
            "stdout": (folder / f"{i}.out").read_text("utf-8", "replace"),
            "stderr": (folder / f"{i}.err").read_text("utf-8", "replace"),
        }
        for i in range(len(cases))
    ]


if __name__ == "__main__":
    import owui_replay.cli
    import owui_replay.download
    import owui_replay.replaying
    import owui_replay.report
    import owui_replay.syncing
    import owui_replay.verifying  # noqa: F401

    cases = json.loads(Path(sys.argv[1]).read_text("utf-8"))
    with tempfile.TemporaryDirectory() as folder:
        results = _drive(cases, Path(folder))
    Path(sys.argv[2]).write_text(json.dumps(results), "utf-8")
