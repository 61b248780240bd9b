"""Small helpers for messages people read."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 line', '2 lines', '0 lines'."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"
