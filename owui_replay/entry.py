"""The console script's first module: Ctrl-C and SIGTERM stop the tool from here on.

Importing the CLI takes a few hundred milliseconds (requests, jsonschema, sqlite3); a SIGTERM
in that time used to kill the process with the default action, before any handler existed.
This module imports nothing heavy and installs the handlers at import, before the command is
parsed. Until main() is under way a stop signal ends the process at once with 130 (nothing
is open yet); from then on it raises KeyboardInterrupt in the main thread, which each part of
the tool turns into its own orderly stop (state saved, partial files removed), also 130.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

INTERRUPTED = 130  # ExitCode.INTERRUPTED, without importing errors.py here
_raising = False  # True while main() can turn KeyboardInterrupt into an orderly stop
_received = False  # a stop signal came in


def _stop(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True
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

        code = cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("owui-replay: interrupted\n")
        code = INTERRUPTED
    finally:
        _raising = False
    if _received:
        _exit(code)
    return code


def _exit(code: int) -> None:
    """Exit with CODE now. CPython 3.11 marks a KeyboardInterrupt that left an exec() of a
    string (a dataclass or namedtuple being built when the signal came) as unhandled even
    when it was caught, and then ends the process by SIGINT instead of its exit code: after a
    stop signal, the tool's own cleanup is done by now, so the streams are flushed and the
    interpreter's finalisation skipped."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
