"""Tell an Open WebUI export from a feedback JSONL by their first bytes, to name a mix-up.

`replay export.json` used to say "line 1 has no newline: the file is truncated" and
`inspect feedback.jsonl` "trailing garbage": true of the bytes, no help to the person. A look
at the start of the file is enough to say what it is and which command takes it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

EXPORT, JSONL, UNKNOWN = "export", "jsonl", "unknown"
_SNIFF = 1 << 16

TAKES = {
    EXPORT: "an Open WebUI feedback export: `owui-replay convert` (or inspect) takes it",
    JSONL: "a feedback JSONL made by convert: `owui-replay replay` (or verify, approve) takes it",
}


def kind(path: Path) -> str:
    """EXPORT, JSONL or UNKNOWN, from the first 64 kB (gzip opened as convert opens it)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                head = handle.read(_SNIFF)
    except (OSError, EOFError, zlib.error):
        return UNKNOWN  # the command's own error says what is wrong with the file
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"["):
        return EXPORT
    if not text.startswith(b"{"):
        return UNKNOWN
    first, newline, _ = text.partition(b"\n")
    try:
        line = json.loads(first)
    except ValueError:
        return EXPORT if b'"items"' in head else UNKNOWN  # a pretty-printed page
    if isinstance(line, dict) and "trace_id" in line and "value" in line:
        return JSONL if newline else UNKNOWN
    return EXPORT if isinstance(line, dict) and "items" in line else UNKNOWN


def mix_up(path: Path, wanted: str) -> str | None:
    """One line when PATH is clearly the other kind of file than the command takes."""
    found = kind(path)
    if found in (wanted, UNKNOWN):
        return None
    return f"{path}: this is {TAKES[found]}"
