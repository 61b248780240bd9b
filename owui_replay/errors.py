"""Exit codes and the exceptions that carry them to the CLI as one friendly line."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in README.md (a test keeps them in step)."""

    OK = 0
    ERROR = 1  # an unexpected failure (run with --traceback for details)
    USAGE = 2  # bad command line or option value
    BAD_INPUT = 3  # the input file is unreadable, malformed or fails its checks
    DELIVERY_FAILED = 4  # replay did not get every line acknowledged (refused, gave up, TLS)
    AUTH = 5  # the server refused the credentials (401/403): the run stopped at once
    MISMATCH = 6  # verify found the handoff inconsistent
    ENDPOINT = (
        7  # the base URL is not Portkey's feedback API (404/405, a redirect): nothing used up
    )
    BUSY = 8  # another run holds the same endpoint (or sync's lock)
    NOT_APPROVED = 9  # replay --allowed-signers: not enough valid approvals; nothing was sent
    NOTHING_NEW = 10  # sync: the run succeeded and there was nothing to send
    NETWORK = 11  # a server could not be reached (or, downloading, broke off); nothing used up
    NO_STATE = 12  # the delivery state has no record of an endpoint that has deliveries elsewhere
    STATE = 13  # the delivery state (or replay's journal) cannot be opened, read or written
    OPTION_CHANGE = 14  # sync: delivered ratings would change only because the options differ
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; state was saved


EXIT_CODE_HELP = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (rerun with --traceback)",
    ExitCode.USAGE: "bad command line or option value",
    ExitCode.BAD_INPUT: "an input file is unreadable, malformed or fails its checks",
    ExitCode.DELIVERY_FAILED: "not every line delivered: refused, retries ran out, or TLS",
    ExitCode.AUTH: "a server refused the credentials; stopped at once",
    ExitCode.MISMATCH: "the handoff does not match its manifest (verify, approve)",
    ExitCode.ENDPOINT: "the base URL is not Portkey's feedback API; nothing used up",
    ExitCode.BUSY: "another run holds the endpoint or sync's work directory",
    ExitCode.NOT_APPROVED: "too few valid approvals (--allowed-signers); nothing sent",
    ExitCode.NOTHING_NEW: "sync: nothing new to send",
    ExitCode.NETWORK: "a server could not be reached (download: or broke off); nothing used up",
    ExitCode.NO_STATE: "evidence of deliveries the state does not know (--new-state); nothing sent",
    ExitCode.STATE: "the delivery state or journal cannot be opened, read or written",
    ExitCode.OPTION_CHANGE: "sync: ratings would change only by options "
    "(--accept-option-change); nothing sent",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM); state was saved",
}


class ReplayError(Exception):
    """An expected failure: the CLI prints `PROG: error: <message>` and exits with `code`."""

    code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, code: ExitCode | None = None, *, prog: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.prog = prog  # which (sub)command said it, for argparse's errors


class UsageError(ReplayError):
    """The command line, an option's value or the configuration is wrong (exit 2)."""

    code = ExitCode.USAGE


class StateError(ReplayError):
    """The delivery state (or the journal beside a handoff) failed: the message names the file
    and the cause."""

    code = ExitCode.STATE


class InputError(ReplayError):
    """The input is malformed; the message names the file and where it broke."""

    code = ExitCode.BAD_INPUT
