"""Mutation testing of one module against chosen tests, with mutmut (a development extra).

    pip install -e '.[dev]'
    python dev/mutate.py owui_replay/atomic.py tests/test_durability.py tests/test_convert_cli.py

Copies the tracked files of this checkout to a scratch folder (mutmut rewrites the tree it
runs in), tells mutmut to mutate only MODULE and to run only TESTS, runs it on both cores, and
prints the score: killed mutants over all mutants, and every survivor by name (see one with
`cd SCRATCH && mutmut show NAME`). Not part of CI: a run takes minutes.

--skip leaves a test out: test_ctrl_c_names_the_partial_files_it_leaves, for one, starts the
tool in a child process and waits for it, which mutmut's statistics pass does not survive.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="e.g. owui_replay/atomic.py")
    parser.add_argument("tests", nargs="+", help="test files that should catch its bugs")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--sample",
        type=int,
        default=1,
        metavar="N",
        help="run every N-th mutant only (source order): an estimate for slow test selections",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NODE_ID",
        help="a test to leave out, e.g. one that mutmut's instrumentation breaks (repeatable)",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="owui-mutate-"))
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file() or source.is_symlink():
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(source.readlink())
            else:
                shutil.copy2(source, target)
    others = sorted(
        f for f in files if f.startswith("owui_replay/") and f.endswith(".py") and f != args.module
    )
    lines = "\n    ".join
    skips = lines(f"--deselect={node}" for node in args.skip)
    (scratch / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths=owui_replay/\n"
        f"do_not_mutate={lines(others)}\n"
        f"pytest_add_cli_args_test_selection={lines(args.tests)}\n"
        + (f"pytest_add_cli_args={skips}\n" if args.skip else "")
        + "also_copy=fixtures/\n    owui_replay/schemas/\n    schemas/\n    tests/\n"
        "    benchmarks/\n    README.md\n    .ci/\n    pyproject.toml\n"
    )
    mutmut = [sys.executable, "-c", _MUTMUT]
    chosen = _sample(mutmut, scratch, args.module, args.sample) if args.sample > 1 else []
    run = subprocess.run(
        [*mutmut, "run", "--max-children", "2", *chosen],
        cwd=scratch, capture_output=True, text=True,
    )  # fmt: skip
    if run.returncode != 0:
        sys.exit(f"mutmut failed in {scratch}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    results = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=scratch, capture_output=True, text=True
    ).stdout
    states = re.findall(r"^\s+(\S+): (.+)$", results, re.M)
    if chosen:
        picked = set(chosen)
        states = [(name, state) for name, state in states if name in picked]
        print(f"one mutant in {args.sample}, in source order: {len(chosen)} of them")
    killed = sum(1 for _, state in states if state == "killed")
    share = killed / max(1, len(states))
    print(f"{args.module}: {killed} of {len(states)} mutants killed ({share:.0%})")
    for name, state in states:
        if state != "killed":
            print(f"  {state:<10} {name}")
    if args.keep:
        print(f"scratch: {scratch}")
    else:
        shutil.rmtree(scratch)


# mutmut 3.8's fork runner reaps with os.wait(): a process that a test leaked (the suite at
# 85355f3 leaked the hashing child when a convert failed early) is reaped as if it were a
# worker, and mutmut stops with a KeyError. This runs mutmut with that wait skipping them.
_MUTMUT = """
import os, sys
from datetime import datetime
from mutmut.workers import isolation

def wait_for_result(self, timeout=None):
    if self._no_tests_results:
        return self._no_tests_results.pop(0)
    while True:
        pid, status = os.wait()
        worker = self._running.pop(pid, None)
        if worker is not None:
            break
    seconds = (datetime.now() - worker.start_time).total_seconds()
    return isolation.MutantResult(
        mutant_name=worker.mutant_name, exit_code=os.waitstatus_to_exitcode(status),
        duration=seconds,
    )

isolation.ForkRunner.wait_for_result = wait_for_result
from mutmut.__main__ import cli
sys.argv[0] = "mutmut"
cli()
"""


def _sample(mutmut: list[str], scratch: Path, module: str, every: int) -> list[str]:
    """Every EVERY-th mutant of MODULE, in source order: mutmut generates them (and measures
    which tests reach what) when asked to run a name that matches none."""
    subprocess.run(
        [*mutmut, "run", "--max-children", "2", "owui_replay.no_such_mutant"],
        cwd=scratch, capture_output=True, text=True,
    )  # fmt: skip
    source = (scratch / "mutants" / module).read_text("utf-8")
    dotted = module.removesuffix(".py").replace("/", ".")
    names = [f"{dotted}.{name}" for name in re.findall(r"def (x\S*?__mutmut_\d+)\(", source)]
    if not names:
        sys.exit(f"no mutants found in {scratch / 'mutants' / module}")
    return names[::every]


if __name__ == "__main__":
    main()
