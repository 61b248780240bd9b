"""Secrets come from the environment or a file, and never leave the process in any text."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from owui_replay.errors import UsageError
from owui_replay.option_names import option

REDACTED = "***"


class Secret:
    """A credential that refuses to be printed: str() and repr() never show it."""

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """Remove the secret from text that may be shown or stored (server echoes, errors)."""
        return text.replace(self._value, REDACTED) if self._value and text else text

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"

    __str__ = __repr__


def clean_secret(value: str, where: str) -> str:
    """The secret without one final newline; anything else unusual is refused, unechoed.

    A key with a space, a tab or a second line inside (a comment under the key in a file) would
    go out in a header, and land in error messages that quote the header. A leading "Bearer "
    (copied from an Authorization header) is dropped: owui-replay writes that word itself.
    """
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if value[:7].lower() == "bearer ":  # pasted from a curl line: the header's word is ours
        value = value[7:]
    if not value:
        raise UsageError(f"{where} is empty")
    for position, char in enumerate(value, 1):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            kind = "a line break" if char in "\r\n" else (
                "whitespace" if char.isspace() else "a control character"
            )  # fmt: skip
            raise UsageError(
                f"{where} holds {kind} at character {position} of {len(value)}: it must be the "
                "secret alone, optionally followed by one newline (the value is not shown)"
            )
    return value


def portkey_key(file: str | None = None) -> Secret:
    """The Portkey API key from FILE, else $PORTKEY_API_KEY (the library's one helper)."""
    return load_secret("PORTKEY_API_KEY", file, "api_key_file")


def openwebui_token(file: str | None = None) -> Secret:
    """The Open WebUI token from FILE, else $OPENWEBUI_TOKEN."""
    return load_secret("OPENWEBUI_TOKEN", file, "token_file")


def load_secret(env_name: str, file: str | None, setting: str) -> Secret:
    """The secret from FILE (when given) or the environment; a UsageError names both ways."""
    if file:
        try:
            value = Path(file).read_bytes().decode("utf-8")  # no newline translation
        except OSError as exc:
            raise UsageError(f"{option(setting, file)}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"{option(setting, file)}: not UTF-8 text (the value is not shown)"
            ) from None
        return Secret(clean_secret(value, option(setting, file)), file)
    value = os.environ.get(env_name, "")
    if not value:
        raise UsageError(f"{env_name} is not set (export it, or pass {option(setting, 'FILE')})")
    return Secret(clean_secret(value, env_name), env_name)
