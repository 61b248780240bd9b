"""What `cp` of a SIGKILLed delivery state costs, against `owui-replay state --backup`.

Each trial replays 1,000 lines to the Portkey stand-in, SIGKILLs the run after a random
number of stored ratings, copies the state file alone (`cp`) and through `state --backup`,
then replays the same file with each copy (the stand-in reset to what it held after the kill;
the `cp` copy also with --new-state, which overrides the refusal) and prints, per copy:
(exit code, extra copies stored, copies announced, unannounced).

    .venv/bin/python dev/cp_after_kill.py [TRIALS]
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp()

from tests.helpers import run_cli
from tests.portkey_stub import portkey_stub
from tests.replay_helpers import (
    make_feedback,
    replay_in_process,
    replay_process,
    uncertain_resent,
)


def trial(seed: int) -> tuple[int, dict[str, tuple[int, int, int, int]]]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp())
    feedback = make_feedback(root, 1000)
    state = root / "ledger.sqlite3"
    kill_at, stored = rng.randint(200, 800), [0]
    victim: list[Any] = [None]

    def hook(phase: str, body: Any) -> None:
        if phase == "stored":
            stored[0] += 1
            if stored[0] == kill_at and victim[0] is not None:
                victim[0].send_signal(signal.SIGKILL)
                victim[0] = None

    out = {}
    with portkey_stub(hook=hook) as stub:
        process = replay_process(feedback, stub.url, "--ledger", str(state), "-q")
        victim[0] = process
        _, first = process.communicate()
        shutil.copyfile(state, root / "cp.sqlite3")
        assert (
            run_cli("state", "--ledger", str(state), "--backup", str(root / "bk.sqlite3")).code == 0
        )
        after_kill = list(stub.state.stored)
        journal = root / "feedback.journal.jsonl"
        journal_after_kill = journal.read_bytes()
        for name, *options in (("cp",), ("cp", "--new-state"), ("bk",)):
            stub.state.stored[:] = after_kill  # Portkey and the journal as the kill left them
            journal.write_bytes(journal_after_kill)
            shutil.copyfile(root / f"{name}.sqlite3", root / "run.sqlite3")  # each from scratch
            copy = str(root / "run.sqlite3")
            run = replay_in_process(feedback, stub.url, "--ledger", copy, *options, quiet=False)
            extra = sum(n - 1 for n in stub.state.feedback_counts().values())
            said = uncertain_resent(first) + uncertain_resent(run.stderr)
            out[" ".join([name, *options])] = (run.code, extra, said, max(0, extra - said))
    return kill_at, out


if __name__ == "__main__":
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        print(trial(seed), flush=True)
