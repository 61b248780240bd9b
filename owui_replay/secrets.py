"""Secrets come from the environment or a file, and never leave the process in any text."""

from __future__ import annotations

import os
from pathlib import Path

from owui_replay.errors import UsageError

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


def load_secret(env_name: str, file: str | None, flag: str) -> Secret:
    """The secret from FILE (when given) or the environment; a UsageError names both ways."""
    if file:
        try:
            value = Path(file).read_text("utf-8").strip()
        except OSError as exc:
            raise UsageError(f"{flag} {file}: cannot read: {exc.strerror}") from None
        if not value:
            raise UsageError(f"{flag} {file}: the file is empty")
        return Secret(value, file)
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise UsageError(f"{env_name} is not set (export it, or pass {flag} FILE)")
    return Secret(value, env_name)
