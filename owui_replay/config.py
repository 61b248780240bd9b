"""One configuration file for every command, so the hand-run chain and `sync` send the same.

The file is TOML: `--config FILE`, else $OWUI_REPLAY_CONFIG, else
$XDG_CONFIG_HOME/owui-replay/config.toml (~/.config/owui-replay/config.toml). Its tables hold
the commands' long options, dashes written as underscores:

    [openwebui]            # download, sync, listen
    openwebui_url = "https://openwebui.example.com"
    token_file = "/etc/owui-replay/openwebui-token"
    [convert]              # convert, sync, listen
    drop_comments = true
    [replay]               # replay, sync, listen; verify and approve take allowed_signers
    portkey_url = "https://portkey.internal.example.com/v1"
    allowed_signers = "/etc/owui-replay/allowed_signers"

Precedence, as git and pip have it: the command line, then the environment, then this file,
then the built-in defaults. Each value goes through the option's own parser, so a file is
checked exactly as the command line is. Secrets are never values here: only the files that
hold them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.errors import UsageError
from owui_replay.option_names import command_flag

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_ENV = "OWUI_REPLAY_CONFIG"

# The tables each command reads, in the order they apply.
READS: dict[str, tuple[str, ...]] = {
    "download": ("openwebui",),
    "convert": ("convert",),
    "replay": ("replay",),
    "verify": ("replay",),
    "approve": ("replay",),
    "state": ("replay",),
    "sync": ("openwebui", "convert", "replay"),
    "listen": ("openwebui", "convert", "replay"),
}

# A key that a command spells otherwise: (command, table, key) -> that command's option.
SPELLED: dict[tuple[str, str, str], str] = {
    ("sync", "openwebui", "timeout"): "download_timeout",
    ("listen", "openwebui", "timeout"): "openwebui_timeout",
}

# Options the environment also sets: when the variable is set, it wins over the file.
ENVIRONMENT: dict[str, str] = {
    "openwebui_url": "OPENWEBUI_BASE_URL",
    "portkey_url": "PORTKEY_BASE_URL",
    "token_file": "OPENWEBUI_TOKEN",
    "api_key_file": "PORTKEY_API_KEY",
    "allowed_signers": "OWUI_REPLAY_ALLOWED_SIGNERS",
}

# Keys a file must not hold: a secret belongs in a file of its own or the environment.
SECRETS = frozenset({"token", "api_key", "openwebui_token", "portkey_api_key"})

# Options that override a safety check or shape one run: written in a file, they would apply
# to every run unseen, so they are refused there and must be given where they are meant.
ONE_RUN = frozenset(
    {
        "new_state", "send_older", "skip_approvals", "no_verify", "retry_refused",
        "restart", "resume", "start_offset", "dry_run", "output", "json", "backup", "forget",
        "accept_other_version", "accept_option_change",
    }
)  # fmt: skip


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "owui-replay"


def default_allowed_signers() -> Path:
    """Where a machine set up for approvals keeps its allowed_signers file."""
    return config_home() / "allowed_signers"


@dataclass
class ConfigFile:
    """A loaded configuration file (or none): its tables and where it came from."""

    path: Path | None
    origin: str  # "--config", "$OWUI_REPLAY_CONFIG" or "default path"
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.path is None:
            return f"no configuration file ({config_home() / 'config.toml'} does not exist)"
        return f"{self.path} (from {self.origin})"


def locate(given: str | None) -> tuple[Path | None, str]:
    """The file to read and why; a missing default file is no error, a named one is."""
    if given:
        return Path(given), "--config"
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}"
    default = config_home() / "config.toml"
    return (default if default.exists() else None), "default path"


def load(given: str | None) -> ConfigFile:
    path, origin = locate(given)
    if path is None:
        return ConfigFile(None, origin)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"config {path} ({origin}): cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"config {path}: not UTF-8 text (byte {exc.start})") from None
    for name, table in document.items():
        if name not in {t for tables in READS.values() for t in tables}:
            raise UsageError(
                f"config {path}: unknown table [{name}] (tables: [openwebui], [convert], [replay])"
            )
        if not isinstance(table, dict):
            raise UsageError(f"config {path}: {name} must be a table, [{name}]")
    return ConfigFile(path, origin, document)


@dataclass
class Setting:
    """One option's effective value for a command and where it came from."""

    option: str  # --long-option
    dest: str
    value: Any
    source: str


def given_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests of the options written in argv (abbreviations are refused by the parser)."""
    words = list(argv[: list(argv).index("--")] if "--" in argv else argv)
    given = set()
    for action in parser._actions:
        for flag in action.option_strings:
            if any(w == flag or w.startswith(flag + "=") for w in words):
                given.add(action.dest)
    return given


def _key(action: argparse.Action) -> str:
    """The file's key for an option: its first long spelling, dashes as underscores."""
    return (long_option(action) or "--")[2:].replace("-", "_")


def long_option(action: argparse.Action) -> str | None:
    longs = [f for f in action.option_strings if f.startswith("--")]
    return longs[0] if longs else None


def _actions_by_key(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag not in ("--help",):
                found[flag[2:].replace("-", "_")] = action
    return found


# Each table holds the options of the commands it is named for; sync and listen, which read
# every table, take from each only what belongs there (a mapping option under [openwebui] is
# refused, not applied to sync alone).
TABLE_OWNERS: dict[str, tuple[str, ...]] = {
    "openwebui": ("download",),
    "convert": ("convert",),
    "replay": ("replay", "state", "verify", "approve"),
}


def known_keys(parsers: dict[str, argparse.ArgumentParser], table: str) -> set[str]:
    """Every key TABLE may hold: the options of the commands it is named for."""
    keys: set[str] = set()
    for command in TABLE_OWNERS.get(table, ()):
        if command in parsers:
            keys |= set(_actions_by_key(parsers[command]))
    keys |= {key for (_c, t, key) in SPELLED if t == table}
    return keys


def apply(
    config: ConfigFile,
    command: str,
    parser: argparse.ArgumentParser,
    parsers: dict[str, argparse.ArgumentParser],
    args: argparse.Namespace,
    argv: Sequence[str],
) -> dict[str, str]:
    """Fill ARGS from the file where neither the command line nor the environment decided;
    answer the dests set, with where each came from. Every key of every table is checked
    first, whichever command runs: a mistake for `sync` shows in the next `convert` too."""
    if config.path is None:
        return {}
    check(config, parsers)
    given = given_on_command_line(parser, argv)
    actions = _actions_by_key(parser)
    sources: dict[str, str] = {}
    for table in READS.get(command, ()):
        known = known_keys(parsers, table)
        for key, value in config.tables.get(table, {}).items():
            if key not in known:
                continue  # check() refused it already; never applied from the wrong table
            action = actions.get(SPELLED.get((command, table, key), key))
            if action is None or action.dest in given:
                continue  # another command's option, or the command line decided
            variable = ENVIRONMENT.get(_key(action))
            if variable and os.environ.get(variable):
                continue  # the environment decided
            where = f"config {config.path} [{table}] {key}"
            setattr(args, action.dest, parse_value(action, value, where))
            sources[action.dest] = f"config {config.path} [{table}]"
    return sources


def check(config: ConfigFile, parsers: dict[str, argparse.ArgumentParser]) -> None:
    """Every key names an option some command reads from its table, with a valid value."""
    for table, values in config.tables.items():
        for key, value in values.items():
            where = f"config {config.path} [{table}] {key}"
            _refuse_unknown(key, table, parsers, where)
            for command, tables in READS.items():
                action = (
                    _actions_by_key(parsers[command]).get(SPELLED.get((command, table, key), key))
                    if table in tables and command in parsers
                    else None
                )
                if action is not None:
                    parse_value(action, value, where)
                    break


def _refuse_unknown(
    key: str, table: str, parsers: dict[str, argparse.ArgumentParser], where: str
) -> None:
    if key in SECRETS:
        raise UsageError(
            f"{where}: a secret does not belong in the configuration file; name the file that "
            f"holds it ({'token_file' if 'token' in key else 'api_key_file'}) or use the "
            "environment"
        )
    if key in ONE_RUN:
        raise UsageError(
            f"{where}: a one-run override does not belong in the configuration file (it would "
            f"apply to every run unseen): give {command_flag(key) or 'it'} on the command line "
            "of the run it is for"
        )
    known = known_keys(parsers, table)
    if key not in known:
        close = sorted(k for k in known if k.split("_")[0] == key.split("_")[0])
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"{where}: no command reads this key from [{table}]{hint}")


def parse_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A TOML value through the option's own parser, so a file is checked as argv is."""
    if action.nargs == 0:  # --flag: true or false
        if not isinstance(value, bool):
            raise UsageError(f"{where}: must be true or false, not {value!r}")
        return action.const if value else action.default
    if isinstance(action, argparse._AppendAction):
        items: Iterable[Any]
        if isinstance(value, dict):  # [convert.metadata] or metadata = {k = "v"}
            items = [f"{k}={v}" for k, v in value.items()]
        else:
            items = value if isinstance(value, list) else [value]
        return [_one(action, item, where) for item in items]
    return _one(action, value, where)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, dict | list | bool):
        raise UsageError(f"{where}: expected a single value, not {value!r}")
    text = str(value)
    try:
        parsed = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    if action.choices is not None and parsed not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"{where}: {parsed!r} is not one of {choices}")
    return parsed


def effective(
    config: ConfigFile,
    command: str,
    parser: argparse.ArgumentParser,
    parsers: dict[str, argparse.ArgumentParser],
) -> list[Setting]:
    """What COMMAND would run with, given no options on its command line (for `config`)."""
    args = argparse.Namespace(
        **{a.dest: a.default for a in parser._actions if a.dest is not argparse.SUPPRESS}
    )
    sources = apply(config, command, parser, parsers, args, [])
    settings = []
    for action in parser._actions:
        option = long_option(action)
        if option is None or option in ("--help", "--config"):
            continue
        key = option[2:].replace("-", "_")
        variable = ENVIRONMENT.get(key)
        value = getattr(args, action.dest)
        if action.dest in sources:
            source = sources[action.dest]
        elif variable and os.environ.get(variable):
            source = f"environment ${variable}"
            value = "(set)" if key in ("token_file", "api_key_file") else os.environ[variable]
        else:
            source = "default"
        settings.append(Setting(option, action.dest, _shown(value), source))
    return settings


def _shown(value: Any) -> Any:
    """A value as `config` may print it: a password inside a URL is masked."""
    if isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        userinfo, at, host = rest.partition("@")
        if at and ":" in userinfo and "/" not in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return value
