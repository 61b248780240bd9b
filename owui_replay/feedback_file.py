"""The Portkey-ready JSONL handoff: checked line by line and against its manifest.

Replay sends each line's bytes exactly as stored, so what an auditor approved (by hash) is
what reaches Portkey. Those bytes must therefore be the canonical line convert writes: a file
with a UTF-8 byte order mark or CR LF line ends (an editor, a git checkout with autocrlf) is
refused before anything is sent, rather than sent byte for byte (Portkey's JSON parser refuses
a body that starts with a BOM, so that rating would be refused for good) or silently rewritten
(the bytes sent would no longer be the bytes whose hash was approved).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owui_replay.errors import ExitCode, InputError
from owui_replay.handoff import HandoffPaths
from owui_replay.option_names import option
from owui_replay.schemas import PORTKEY_SCHEMA, RecordValidator


@dataclass(frozen=True)
class FeedbackFile:
    """A feedback JSONL scanned once: its sha256, its lines, and their byte offsets."""

    path: Path
    sha256: str
    lines: int
    bytes: int


def scan_feedback(
    path: Path, visit: Callable[[int, Any, bytes], None] | None = None
) -> FeedbackFile:
    """Hash the file and check every line against the Portkey payload schema; `visit` sees
    each (0-based line number, payload, raw line) so callers need not parse it again."""
    validator = RecordValidator(PORTKEY_SCHEMA)
    digest = hashlib.sha256()
    count = size = 0
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            _check_canonical(path, number, size, raw)
            digest.update(raw)
            size += len(raw)
            count += 1
            payload = _parse_line(path, number, raw)
            if not validator.is_valid(payload):
                first = validator.errors(payload)[0]
                where = first.path or "the line"
                raise InputError(
                    f"{path}: line {number}: not a Portkey feedback payload: {where}: "
                    f"{first.message}"
                )
            if visit is not None:
                visit(number - 1, payload, raw)
    return FeedbackFile(path, digest.hexdigest(), count, size)


BOM = b"\xef\xbb\xbf"
NOT_CANONICAL = (
    "convert writes LF line ends and no byte order mark, and replay sends each line's bytes "
    "as they are; restore convert's file (or convert again)"
)


def _check_canonical(path: Path, number: int, offset: int, raw: bytes) -> None:
    """Refuse a line that is not byte for byte what convert writes: a BOM, a CR LF."""
    if raw.startswith(BOM):
        raise InputError(
            f"{path}: line {number} (byte {offset}) starts with a UTF-8 byte order mark: "
            + NOT_CANONICAL
        )
    if raw.endswith(b"\r\n"):
        raise InputError(
            f"{path}: line {number} (byte {offset + len(raw) - 2}) ends in CR LF: " + NOT_CANONICAL
        )


def _parse_line(path: Path, number: int, raw: bytes) -> Any:
    if not raw.endswith(b"\n"):
        raise InputError(f"{path}: line {number} has no newline: the file is truncated")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: line {number}: not JSON: {exc}") from None


def check_manifest(feedback: FeedbackFile) -> dict[str, Any] | None:
    """Compare with OUT.manifest.json when it is there; None when there is no manifest."""
    manifest_path = HandoffPaths.for_output(feedback.path).manifest
    if not manifest_path.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text("utf-8"))
        expected = manifest["output"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{manifest_path}: unreadable manifest: {exc}", ExitCode.MISMATCH
        ) from None
    if expected.get("sha256") != feedback.sha256 or expected.get("lines") != feedback.lines:
        raise InputError(
            f"{feedback.path} does not match {manifest_path.name} (sha256 "
            f"{feedback.sha256[:12]}… for {feedback.lines} lines, manifest says "
            f"{str(expected.get('sha256'))[:12]}… for {expected.get('lines')}): the file changed "
            f"after convert; re-run convert, or pass {option('no_verify')} to send it anyway",
            ExitCode.MISMATCH,
        )
    return manifest


def iter_lines(path: Path, wanted: Iterator[int] | Any) -> Iterator[tuple[int, bytes]]:
    """(line number, raw JSON without newline) for the 0-based line numbers in `wanted`."""
    wanted_set = wanted if isinstance(wanted, (set, frozenset)) else set(wanted)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle):
            if number in wanted_set:
                yield number, raw.rstrip(b"\n")
