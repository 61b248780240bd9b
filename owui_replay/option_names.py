"""How a message names a setting: the flag of the command showing it, or the Python name.

Library code does not know who called it. The Open WebUI timeout is `--download-timeout` under
`sync`, `--timeout` under `download`, `--openwebui-timeout` under `listen`, and a Python
caller passes `timeout=` or `download_timeout=`; `verify` has no `--since` at all. So no
library message spells a flag: it names the setting by its key, `option("openwebui_timeout")`,
and gets the name its reader can act on. The command line installs a lookup for the length of
a command (`naming()`, cli.flag_namer): the flag that command registered for the setting
(argparse knows it), or None, and then plain words; with none installed (the Python API) the
key becomes the keyword argument or settings field that sets it. The lookup is the process's
own, as the command line runs one command per process.

The name is rendered when the message is made, so nothing has to be rewritten later, whatever
way the text leaves (an exception, a log line, a summary, a JSON field, an HTML page). Text
written into a handoff's files must be byte-identical whoever writes it (verify converts again
and compares), so it names the convert option with `handoff_option()`, always the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple


class Setting(NamedTuple):
    python: str  # the keyword argument or settings field that sets it ("name=True": a switch)
    words: str  # for a command that has no option for it


SETTINGS: dict[str, Setting] = {
    "accept_other_version": Setting("accept_other_version=True", "accepting another version"),
    "allow_empty": Setting("allow_empty=True", "allowing an empty export"),
    "allow_insecure_http": Setting("allow_insecure_http=True", "allowing plain http"),
    "allowed_signers": Setting("allowed_signers", "an allowed-signers file"),
    "api_key_file": Setting("file", "the API key file"),
    "ca_bundle": Setting("verify_tls", "the CA bundle"),
    "export": Setting("export", "the export"),
    "full": Setting("full=True", "a full read"),
    "json": Setting("as_dict()", "JSON output"),
    "listen": Setting("host, port", "the listen address"),
    "max_withdraw": Setting("max_withdraw", "the withdrawal limit"),
    "new_state": Setting("new_state=True", "a new state"),
    "no_verify": Setting("verify_manifest=False", "skipping the manifest check"),
    "no_withdraw": Setting("withdraw=False", "not withdrawing"),
    "openwebui_timeout": Setting(
        "timeout (download_export), download_timeout (SyncSettings)", "the Open WebUI timeout"
    ),
    "openwebui_url": Setting("openwebui_url", "the Open WebUI URL"),
    "portkey_timeout": Setting("timeout", "the Portkey timeout"),
    "portkey_url": Setting("base_url", "the Portkey base URL"),
    "previous": Setting("previous", "an earlier handoff"),
    "register": Setting("register=True", "registering the webhook"),
    "retry_refused": Setting("retry_refused=True", "retrying refused lines"),
    "rows": Setting("rows", "the row limit"),
    "secret_file": Setting("secret_file", "the secret file"),
    "send_older": Setting("send_older=True", "sending older versions"),
    "since": Setting("since", "the since bound"),
    "start_offset": Setting("start_offset", "the start offset"),
    "state_file": Setting("state_file", "the state file"),
    "token_file": Setting("file", "the token file"),
    "top": Setting("top", "the row limit"),
    "trace_id": Setting("trace_template", "the trace id template"),
    "uncertain": Setting("uncertain", "the uncertain-line policy"),
    "until": Setting("until", "the until bound"),
    "user_scope": Setting("user_scope=True", "your own ratings only"),
    "wait": Setting("wait=True", "waiting for the other run"),
    "withdraw_missing": Setting("withdraw_missing=True", "withdrawing what the export lacks"),
}

# convert's options as a handoff's rejects file names them: the same bytes whoever converts
# (verify converts again and compares).
HANDOFF_FLAGS = {"since": "--since", "until": "--until", "trace_id": "--trace-id"}

_flag_of: Callable[[str], str | None] | None = None


def option(key: str, value: object = None) -> str:
    """Setting KEY (with VALUE, if given) as whoever reads this message sets it: the running
    command's flag, plain words if it has none, or the Python name (module docstring)."""
    setting = SETTINGS[key]  # a KeyError here is a typo in the library, caught by the tests
    if _flag_of is None:
        return setting.python if value is None else f"{setting.python}={value}"
    flag = _flag_of(key)
    name = flag if flag is not None else setting.words
    return name if value is None else f"{name} {value}"


def command_flag(dest: str) -> str | None:
    """The running command's flag for argparse DEST (a configuration key), if it has one."""
    return _flag_of(dest) if _flag_of is not None else None


def command_option(command: str, flag: str) -> str:
    """Another command's option, always as a command line: `owui-replay state --backup`
    means the same to a Python caller (the command is installed with the library)."""
    return f"owui-replay {command} --{flag}"


def handoff_option(key: str) -> str:
    """Convert's option KEY as a handoff's rejects file names it: fixed text."""
    return HANDOFF_FLAGS[key]


@contextlib.contextmanager
def naming(flag_of: Callable[[str], str | None]) -> Iterator[None]:
    """While a command runs, messages name settings by FLAG_OF (its own flags, or None)."""
    global _flag_of
    before, _flag_of = _flag_of, flag_of
    try:
        yield
    finally:
        _flag_of = before
