"""The console script's first module: Ctrl-C and SIGTERM stop the tool from here on.

Importing the CLI takes a few hundred milliseconds (requests, jsonschema, sqlite3); a SIGTERM
in that time used to kill the process with the default action, before any handler existed.
This module imports nothing heavy and installs the handlers at import, before the command is
parsed. Until main() is under way a stop signal ends the process at once with 130 (nothing
is open yet); from then on it raises KeyboardInterrupt in the main thread, which each part of
the tool turns into its own orderly stop (state saved, partial files removed), also 130.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED = 130  # ExitCode.INTERRUPTED, without importing errors.py here
_raising = False  # True while main() can turn KeyboardInterrupt into an orderly stop


def _stop(signum: int, frame: FrameType | None) -> None:
    if _raising:
        raise KeyboardInterrupt
    os.write(2, b"owui-replay: interrupted\n")
    os._exit(INTERRUPTED)


signal.signal(signal.SIGTERM, _stop)
if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring it
    signal.signal(signal.SIGINT, _stop)


def main() -> int:
    """Run the CLI; a stop signal before the CLI could handle it exits 130 as well."""
    global _raising
    try:
        _raising = True
        from owui_replay.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("owui-replay: interrupted\n")
        return INTERRUPTED
    finally:
        _raising = False
