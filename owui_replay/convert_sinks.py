"""Where convert's outcomes go: behind one interface, so the job does not know which it has.

- DryRunSink counts the lines a real run would write and writes nothing (`convert --dry-run`).
- FileSink writes OUT.jsonl and OUT.rejects.jsonl as partial files; the job commits them.
- ComparingSink writes nothing either: it compares every produced line with an existing
  handoff's files, for `verify --export`, and names the first difference in each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owui_replay.atomic import HashedWriter, partial_path, write_json_atomic
from owui_replay.errors import InputError
from owui_replay.handoff import HandoffPaths

_UNICODE_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))

# built once: json.dumps with any option set builds a new encoder on every call
_SORTED = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_AS_GIVEN = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps_line(obj: Any, *, sort_keys: bool = True) -> bytes:
    """Deterministic, compact, UTF-8 JSON line (same input and options: same bytes).

    U+0085, U+2028 and U+2029 are escaped: JSON allows them raw, but readers that split
    lines the Unicode way (str.splitlines, JavaScript) would cut the line there.
    """
    text = (_SORTED if sort_keys else _AS_GIVEN).encode(obj)
    for raw, escaped in _UNICODE_LINE_BREAKS:
        if raw in text:  # a fast scan; replacing only when needed keeps big rejects cheap
            text = text.replace(raw, escaped)
    return (text + "\n").encode("utf-8")


class Sink:
    """Receives every produced payload line and reject entry, in input order.

    This base class is the dry run: it numbers the payload lines and keeps nothing.
    """

    def __init__(self) -> None:
        self.out_lines = 0

    def payload(self, line: bytes) -> int:
        """Take one payload line; answer its 0-based line number in the output."""
        self.out_lines += 1
        return self.out_lines - 1

    def reject(self, entry: dict[str, Any]) -> None:
        """Take one reject entry (already final: index, id, outcome, reason, ...)."""

    def drop_superseded(self, superseded: dict[int, int], entry_for: Any) -> None:
        """Move the payload lines in `superseded` (line -> input index) to the rejects, as
        `entry_for(index, payload)` makes them; called once, after the last record."""

    def files(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The output and rejects files' summaries for the manifest (None: nothing written)."""
        return None

    def commit(self, manifest: dict[str, Any]) -> None:
        """After the last record: put what was written under its final names, manifest last."""

    def close_quietly(self) -> None:
        """After a failure: close what is open, raising nothing that would hide the failure."""

    def failed(self) -> str | None:
        """After a failure: keep what can be kept and say where it is (None: nothing kept,
        the failure is reported as it is)."""
        return None

    def discard(self) -> None:
        """The run produced nothing worth keeping: remove what it wrote."""


DryRunSink = Sink


class FileSink(Sink):
    """The two writers of a real run: partial files, hashed as they are written."""

    def __init__(self, paths: HandoffPaths) -> None:
        super().__init__()
        self.paths = paths
        self.out = HashedWriter(paths.output)
        try:
            self.rejects = HashedWriter(paths.rejects)
        except BaseException:
            self.out.close()
            raise

    def payload(self, line: bytes) -> int:
        self.out.write_line(line)
        return super().payload(line)

    def reject(self, entry: dict[str, Any]) -> None:
        # the original record keeps its own key order (deterministic: it is the input's)
        self.rejects.write_line(dumps_line(entry, sort_keys=False))

    def drop_superseded(self, superseded: dict[int, int], entry_for: Any) -> None:
        """Rewrite only the small output file, never the export; the removed payloads go to
        the rejects, so the accounting still adds up."""
        old = self.out
        old.close()
        tmp = old.partial.with_name(old.partial.name + ".old")
        os.replace(old.partial, tmp)
        rewritten = HashedWriter(old.final)
        with open(tmp, "rb") as handle:
            for line_no, line in enumerate(handle):
                if line_no in superseded:
                    self.reject(entry_for(superseded[line_no], json.loads(line)))
                else:
                    rewritten.write_line(line)
        os.unlink(tmp)
        self.out = rewritten

    def files(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.out.summary(), self.rejects.summary()

    def commit(self, manifest: dict[str, Any]) -> None:
        """All final names or none: every target is checked before the first rename; the
        manifest comes last, so a handoff with a manifest is always complete."""
        paths = self.paths
        for final in (paths.rejects, paths.output, paths.manifest):
            if final.is_dir():
                raise InputError(f"{final} is a folder: nothing was renamed into place")
        self._close()
        renamed: list[Path] = []
        try:
            for writer in (self.rejects, self.out):
                writer.commit()
                renamed.append(writer.final)
            write_json_atomic(paths.manifest, manifest)
        except OSError:
            for final in renamed:  # never leave some final names without the others
                final.unlink(missing_ok=True)
            raise

    def _close(self) -> None:
        self.out.close()
        self.rejects.close()

    def close_quietly(self) -> None:
        """Keep the partial files, raise nothing that would hide the failure being reported."""
        self.out.close_quietly()
        self.rejects.close_quietly()

    def failed(self) -> str:
        self.close_quietly()
        return explain_partial(self.paths)

    def discard(self) -> None:
        self._close()
        self.out.partial.unlink(missing_ok=True)
        self.rejects.partial.unlink(missing_ok=True)


def explain_partial(paths: HandoffPaths) -> str:
    """Where a failed or interrupted run left its work, for the message; empty partial files
    are removed, so what is named is all that is left."""
    kept = []
    for final in (paths.output, paths.rejects):
        partial = partial_path(final)
        if partial.exists() and partial.stat().st_size > 0:
            kept.append(str(partial))
        else:
            partial.unlink(missing_ok=True)
    where = f"what was written before it is in {' and '.join(kept)}; " if kept else ""
    return f"{where}{paths.output} was not written"


@dataclass
class Difference:
    """Where a handoff first departs from what convert makes of its export."""

    file: str
    line: int  # 1-based line in that file
    found: bytes  # what the file has there (b"" past its end)
    expected: bytes  # what convert produces there (b"" when the file has a line too many)

    def describe(self) -> str:
        if not self.expected:
            return (
                f"{self.file} line {self.line}: a line convert does not make: {_clip(self.found)}"
            )
        if not self.found:
            return f"{self.file} ends before line {self.line}; convert makes {_clip(self.expected)}"
        at = next(
            (i for i, (a, b) in enumerate(zip(self.found, self.expected, strict=False)) if a != b),
            min(len(self.found), len(self.expected)),
        )
        return (
            f"{self.file} line {self.line} differs from what convert makes of the export at "
            f"byte {at}: has {_clip(self.found, at)}, expected {_clip(self.expected, at)}"
        )


def _clip(data: bytes, around: int = 0, width: int = 70) -> str:
    """A short, readable window of a line around one byte position."""
    start = max(0, around - width // 2)
    text = data[start : start + width].decode("utf-8", "replace").rstrip("\n")
    return repr(("…" if start else "") + text + ("…" if start + width < len(data) else ""))


class ComparingSink(Sink):
    """Instead of writing, compare every produced line with an existing handoff's files.

    Output lines are matched as they come; a produced line that does not match is held
    aside (only superseded lines should be, and they are few); rejects are compared in order.
    Memory stays bounded: past MAX_HELD lines held aside, the handoff is already different.
    The caller closes it (`release`) after reading `differences`.
    """

    MAX_HELD = 10_000

    def __init__(self, paths: HandoffPaths) -> None:
        super().__init__()
        self.handoff = paths
        self._out = open(paths.output, "rb")  # noqa: SIM115 - closed in release()
        try:
            self._rejects = open(paths.rejects, "rb")  # noqa: SIM115 - closed in release()
        except BaseException:
            self._out.close()
            raise
        self._out_line = 0  # lines of the file matched so far
        self._rejects_line = 0
        self.held: dict[int, tuple[bytes, int, bytes]] = {}  # produced index -> (line, at, found)
        self.overflow = False
        self.rejects_difference: Difference | None = None

    def payload(self, line: bytes) -> int:
        index = super().payload(line)
        position = self._out.tell()
        found = self._out.readline()
        if found == line:
            self._out_line += 1
        else:
            self._out.seek(position)  # the file line may match the next produced one
            if len(self.held) < self.MAX_HELD:
                self.held[index] = (line, self._out_line + 1, found)
            else:
                self.overflow = True
        return index

    def reject(self, entry: dict[str, Any]) -> None:
        line = dumps_line(entry, sort_keys=False)
        found = self._rejects.readline()
        self._rejects_line += 1
        if found != line and self.rejects_difference is None:
            self.rejects_difference = Difference(
                self.handoff.rejects.name, self._rejects_line, found, line
            )

    def drop_superseded(self, superseded: dict[int, int], entry_for: Any) -> None:
        """The superseded lines were held aside (the handoff does not have them): compare
        their reject entries in order, as a real run writes them."""
        for line_no in sorted(superseded):
            held = self.held.get(line_no)
            if held is not None:
                self.reject(entry_for(superseded[line_no], json.loads(held[0])))

    def differences(self, superseded: dict[int, int]) -> list[Difference]:
        """After the run: the first difference in each file (none: byte-identical)."""
        found: list[Difference] = []
        strays = sorted(i for i in self.held if i not in superseded)
        missing = sorted(i for i in superseded if i not in self.held)
        extra = self._out.readline()
        name = self.handoff.output.name
        if strays or self.overflow:
            line, at, there = self.held[strays[0]] if strays else (b"", 0, b"")
            found.append(Difference(name, at, there, line))
        elif missing:  # the file kept a line that convert drops as superseded
            found.append(Difference(name, self._out_line, b"(a superseded version)", b""))
        elif extra:
            found.append(Difference(name, self._out_line + 1, extra, b""))
        if self.rejects_difference is not None:
            found.append(self.rejects_difference)
        elif extra_reject := self._rejects.readline():
            found.append(Difference(self.handoff.rejects.name, self._rejects_line + 1,
                                    extra_reject, b""))  # fmt: skip
        return found

    def release(self) -> None:
        self._out.close()
        self._rejects.close()
