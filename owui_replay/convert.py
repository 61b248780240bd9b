"""The convert job: export in; Portkey JSONL, rejects and manifest out; every record counted."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from owui_replay._version import __version__
from owui_replay.atomic import HashedWriter, partial_path, write_json_atomic
from owui_replay.errors import ExitCode, InputError, ReplayError, UsageError
from owui_replay.export_reader import ExportStream, open_export
from owui_replay.handoff import MANIFEST_FORMAT, HandoffPaths
from owui_replay.mapping import Mapper, MappingOptions, Skip
from owui_replay.progress import byte_bar
from owui_replay.schemas import OPENWEBUI_SCHEMA, PORTKEY_SCHEMA, RecordValidator, schema_version
from owui_replay.words import plural

# Outcomes: every input record ends in exactly one of these.
WRITTEN, INVALID, SKIPPED, FILTERED, DUPLICATE, SUPERSEDED = (
    "written",
    "invalid",
    "skipped",
    "filtered",
    "duplicate",
    "superseded",
)
OUTCOMES = (WRITTEN, INVALID, SKIPPED, FILTERED, DUPLICATE, SUPERSEDED)
FILTER_REASONS = frozenset({"before_since", "not_before_until"})


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


@dataclass
class ConvertResult:
    records: int
    counts: Counter[str]
    reasons: Counter[str]
    paths: HandoffPaths | None
    manifest: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    superseded: dict[int, int] = field(default_factory=dict)  # output line -> input index

    def as_dict(self) -> dict[str, Any]:
        """The --json result (fields documented in README.md)."""
        doc: dict[str, Any] = {
            "command": "convert",
            "exit_code": 0,
            "dry_run": self.paths is None,
            "records": self.records,
            "outcomes": {o: self.counts[o] for o in OUTCOMES},
            "reasons": dict(sorted(self.reasons.items())),
            "input": self.manifest.get("input", {}),
        }
        if self.paths is not None:
            doc.update(
                output=str(self.paths.output),
                rejects=str(self.paths.rejects),
                manifest=str(self.paths.manifest),
                output_sha256=self.manifest["output"]["sha256"],
                output_lines=self.manifest["output"]["lines"],
                rejects_sha256=self.manifest["rejects"]["sha256"],
            )
        return doc

    def summary(self) -> str:
        dry = self.paths is None

        def label(outcome: str) -> str:
            return "to write" if dry and outcome == WRITTEN else outcome

        parts = ", ".join(f"{self.counts[o]} {label(o)}" for o in OUTCOMES if self.counts[o])
        line = f"{plural(self.records, 'record')}: {parts or 'nothing to do'}"
        if self.paths is not None:
            line += f" -> {self.paths.output}"
        return line


@dataclass
class _Seen:
    updated_at: int
    index: int
    line: int | None  # output line when written, else None


class _Sinks:
    """Where outcomes go: the two writers in a real run, nowhere in a dry run."""

    def __init__(self, paths: HandoffPaths | None) -> None:
        self.paths = paths
        self.out = HashedWriter(paths.output) if paths else None
        try:
            self.rejects = HashedWriter(paths.rejects) if paths else None
        except BaseException:
            if self.out is not None:
                self.out.close()
            raise
        self.out_lines = 0

    def payload(self, line: bytes) -> int:
        self.out_lines += 1
        if self.out is not None:
            self.out.write_line(line)
        return self.out_lines - 1

    def reject(self, entry: dict[str, Any]) -> None:
        if self.rejects is not None:
            # the original record keeps its own key order (deterministic: it is the input's)
            self.rejects.write_line(dumps_line(entry, sort_keys=False))

    def close(self) -> None:
        for writer in (self.out, self.rejects):
            if writer is not None:
                writer.close()

    def close_quietly(self) -> None:
        """After a failure: keep the partial files, raise nothing that would hide it."""
        for writer in (self.out, self.rejects):
            if writer is not None:
                writer.close_quietly()

    def discard(self) -> None:
        """Remove the partial files of a run that produced nothing worth keeping."""
        self.close()
        for writer in (self.out, self.rejects):
            if writer is not None:
                writer.partial.unlink(missing_ok=True)


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


class _ComparingSinks(_Sinks):
    """Instead of writing, compare every produced line with an existing handoff's files.

    Output lines are matched as they come; a produced line that does not match is held
    aside (only superseded lines should be, and they are few); rejects are compared in order.
    Memory stays bounded: past MAX_HELD lines held aside, the handoff is already different.
    """

    MAX_HELD = 10_000

    def __init__(self, paths: HandoffPaths) -> None:
        super().__init__(None)
        self.handoff = paths
        self._out = open(paths.output, "rb")  # noqa: SIM115 - closed in close()
        self._rejects = open(paths.rejects, "rb")  # noqa: SIM115 - closed in close()
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

    def close(self) -> None:
        """convert() closes its sinks before the comparison is read: keep the files open."""

    def discard(self) -> None:
        self.release()

    def release(self) -> None:
        self._out.close()
        self._rejects.close()


def reproduce(
    export_path: str, paths: HandoffPaths, options: MappingOptions
) -> tuple[ConvertResult, list[Difference]]:
    """Convert EXPORT again, comparing with the handoff's files instead of writing any."""
    sinks = _ComparingSinks(paths)
    try:
        result = convert(export_path, None, options, progress=False, allow_empty=True, _sinks=sinks)
        return result, sinks.differences(result.superseded)
    finally:
        sinks.release()


def convert(
    export_path: str | Path,
    output: str | Path | None,
    options: MappingOptions | None = None,
    *,
    samples: int = 0,
    stderr: IO[str] | None = None,
    progress: bool | None = None,
    allow_empty: bool = False,
    _sinks: _Sinks | None = None,
) -> ConvertResult:
    """Convert EXPORT to OUTPUT (None: dry run, nothing written). Raises InputError."""
    options = options or MappingOptions()
    mapper = Mapper(options)
    record_validator = RecordValidator(OPENWEBUI_SCHEMA)
    payload_validator = RecordValidator(PORTKEY_SCHEMA)
    if isinstance(output, str) and output.endswith(("/", os.sep)):
        raise UsageError(f"-o {output} is a folder; name the output file, e.g. -o {output}f.jsonl")
    paths = HandoffPaths.for_output(output) if output is not None else None
    if paths is not None:
        refuse_clobbering(str(export_path), paths)
    stream = open_export(str(export_path))
    try:
        sinks = _sinks or _Sinks(paths)
    except BaseException:
        stream.close()
        raise
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    seen: dict[str, _Seen] = {}
    superseded: dict[int, int] = {}  # output line -> input index
    sample_payloads: list[dict[str, Any]] = []
    index = -1
    bar = byte_bar(stream.size, stream.name, stderr=stderr or sys.stderr, enabled=progress)
    try:
        with bar, _fewer_collections():
            last = 0
            for index, record in enumerate(stream.records()):
                outcome, reason = _process(
                    index,
                    record,
                    mapper,
                    record_validator,
                    payload_validator,
                    sinks,
                    seen,
                    superseded,
                    sample_payloads,
                    samples,
                )
                counts[outcome] += 1
                if reason:
                    reasons[reason] += 1
                now = stream.raw.bytes_read
                bar.update(now - last)
                last = now
        total = index + 1
        if total == 0 and not allow_empty:
            sinks.discard()
            raise InputError(_empty_message(stream))
        if superseded:
            _drop_superseded(sinks, superseded, counts, reasons)
        if sum(counts.values()) != total:  # pragma: no cover - an invariant, not an input case
            raise AssertionError(f"counts {dict(counts)} do not add up to {total} records")
        manifest = build_manifest(stream, options, total, counts, reasons, sinks)
        if paths is not None and sinks.out is not None and sinks.rejects is not None:
            _commit(sinks.out, sinks.rejects, paths, manifest)
    except InputError as exc:
        if paths is None or _sinks is not None:
            raise
        sinks.close_quietly()
        raise InputError(f"{exc}; {explain_partial(paths)}", exc.code) from None
    except KeyboardInterrupt:
        if paths is None or _sinks is not None:
            raise
        sinks.close_quietly()
        raise ReplayError(f"interrupted; {explain_partial(paths)}", ExitCode.INTERRUPTED) from None
    finally:
        sinks.close_quietly()  # committed (so closed) on success; after a failure, kept as is
        stream.close()
    return ConvertResult(total, counts, reasons, paths, manifest, sample_payloads, superseded)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while records stream through.

    Each record is a tree of thousands of fresh containers (no cycles), so the default
    threshold (700 allocations) starts a collection several times per record for nothing:
    ~2.5% of the time on exports of many short strings. Collections still run, less often.
    """
    before = gc.get_threshold()
    gc.set_threshold(10_000, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _process(
    index: int,
    record: Any,
    mapper: Mapper,
    record_validator: RecordValidator,
    payload_validator: RecordValidator,
    sinks: _Sinks,
    seen: dict[str, _Seen],
    superseded: dict[int, int],
    sample_payloads: list[dict[str, Any]],
    samples: int,
) -> tuple[str, str | None]:
    """Decide one record's outcome and send it to the output or the rejects."""
    record_id = record.get("id") if isinstance(record, dict) else None  # parsed JSON: a dict
    if not record_validator.is_valid(record) or not isinstance(record_id, str):
        errors = [e.as_dict() for e in record_validator.errors(record)]
        sinks.reject(_reject(index, record_id, INVALID, "schema", errors=errors, record=record))
        return INVALID, "schema"
    updated_at = int(record["updated_at"])
    earlier = seen.get(record_id)
    if earlier is not None and updated_at <= earlier.updated_at:
        detail = f"feedback id already seen at index {earlier.index} with updated_at >= this one"
        sinks.reject(_reject(index, record_id, DUPLICATE, "duplicate_id", detail, record=record))
        return DUPLICATE, "duplicate_id"
    if earlier is not None and earlier.line is not None:
        superseded[earlier.line] = earlier.index
    try:
        payload = mapper.map(record)
    except Skip as skip:
        outcome = FILTERED if skip.code in FILTER_REASONS else SKIPPED
        original = None if outcome == FILTERED else record
        sinks.reject(_reject(index, record_id, outcome, skip.code, skip.detail, record=original))
        seen[record_id] = _Seen(updated_at, index, None)
        return outcome, skip.code
    if not payload_validator.is_valid(payload):
        errors = [e.as_dict() for e in payload_validator.errors(payload)]
        detail = "the mapped payload fails the Portkey schema"
        seen[record_id] = _Seen(updated_at, index, None)
        sinks.reject(
            _reject(index, record_id, INVALID, "payload_schema", detail, errors, record=record)
        )
        return INVALID, "payload_schema"
    line = sinks.payload(dumps_line(payload))
    seen[record_id] = _Seen(updated_at, index, line)
    if len(sample_payloads) < samples:
        sample_payloads.append(payload)
    return WRITTEN, None


def _reject(
    index: int,
    record_id: Any,
    outcome: str,
    reason: str,
    detail: str | None = None,
    errors: list[dict[str, str]] | None = None,
    *,
    record: Any = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "id": record_id, "outcome": outcome, "reason": reason}
    if detail:
        entry["detail"] = detail
    if errors:
        entry["errors"] = errors
    if record is not None:
        entry["record"] = record
    return entry


def _drop_superseded(
    sinks: _Sinks, superseded: dict[int, int], counts: Counter[str], reasons: Counter[str]
) -> None:
    """Remove payloads whose feedback id reappeared with a newer updated_at (a changed rating).

    Rewrites only the small output file, never the export; the removed payloads go to the
    rejects, so the accounting still adds up.
    """
    counts[WRITTEN] -= len(superseded)
    counts[SUPERSEDED] += len(superseded)
    reasons["superseded"] += len(superseded)
    if isinstance(sinks, _ComparingSinks):
        for line_no in sorted(superseded):
            held = sinks.held.get(line_no)
            if held is not None:
                sinks.reject(_superseded_entry(superseded[line_no], json.loads(held[0])))
        return
    if sinks.out is None or sinks.rejects is None:
        return
    old = sinks.out
    old.close()
    tmp = old.partial.with_name(old.partial.name + ".old")
    os.replace(old.partial, tmp)
    rewritten = HashedWriter(old.final)
    with open(tmp, "rb") as handle:
        for line_no, line in enumerate(handle):
            if line_no in superseded:
                sinks.reject(_superseded_entry(superseded[line_no], json.loads(line)))
            else:
                rewritten.write_line(line)
    os.unlink(tmp)
    sinks.out = rewritten


def _superseded_entry(index: int, payload: dict[str, Any]) -> dict[str, Any]:
    entry = _reject(
        index,
        payload.get("metadata", {}).get("feedback_id"),
        SUPERSEDED,
        "superseded",
        "a later record has the same feedback id and a newer updated_at",
    )
    entry["payload"] = payload
    return entry


def build_manifest(
    stream: ExportStream,
    options: MappingOptions,
    total: int,
    counts: Counter[str],
    reasons: Counter[str],
    sinks: _Sinks,
) -> dict[str, Any]:
    """What was read, with which settings, and what came out: for audit and for replay."""
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_FORMAT,
        "tool": {"name": "owui-replay", "version": __version__},
        "schemas": {
            "openwebui": schema_version(OPENWEBUI_SCHEMA),
            "portkey": schema_version(PORTKEY_SCHEMA),
        },
        "options": options.as_dict(),
        "input": {
            "name": os.path.basename(stream.name),
            "bytes": stream.raw.bytes_read,
            "sha256": stream.sha256(),
            "gzip": stream.compressed,
            "utf8_bom": stream.bom,
            "shape": stream.shape,
        },
        "counts": {"records": total, **{o: counts[o] for o in OUTCOMES}},
        "reasons": dict(sorted(reasons.items())),
    }
    if stream.page_total is not None:
        manifest["input"]["page_total"] = stream.page_total
    if sinks.out is not None and sinks.rejects is not None:
        manifest["output"] = sinks.out.summary()
        manifest["rejects"] = sinks.rejects.summary()
    return manifest


def _empty_message(stream: ExportStream) -> str:
    if stream.shape == "page":
        total = f" although its total is {stream.page_total}" if stream.page_total else ""
        hint = " (a page past the end?)" if stream.page_total else ""
        return (
            f"{stream.name}: the page has no items{total}{hint}; nothing to convert "
            "(--allow-empty accepts it)"
        )
    return (
        f"{stream.name}: the export is an empty array; nothing to convert "
        "(--allow-empty accepts it)"
    )


def refuse_clobbering(export: str, paths: HandoffPaths) -> None:
    """Before reading anything: no output may be the export itself (by any name, through a
    symlink or a hard link), and -o must name a file, not a folder."""
    output = paths.output
    if output.is_dir():
        raise UsageError(
            f"-o {output} is a folder; name the output file, e.g. -o {output / 'feedback.jsonl'}"
        )
    for final in (paths.output, paths.rejects, paths.manifest):
        for path in (final, partial_path(final)):
            if path.is_dir():
                raise UsageError(f"{path} is a folder: convert would have to replace it")
            if export != "-" and path.exists() and os.path.samefile(export, path):
                raise UsageError(
                    f"{path} is the export {export} itself (the same file by another name or "
                    "link): choose another -o, or the export would be overwritten"
                )


def _commit(out: HashedWriter, rejects: HashedWriter, paths: HandoffPaths, manifest: Any) -> None:
    """All final names or none: every target is checked before the first rename; the manifest
    comes last, so a handoff with a manifest is always complete."""
    for final in (paths.rejects, paths.output, paths.manifest):
        if final.is_dir():
            raise InputError(f"{final} is a folder: nothing was renamed into place")
    rejects.close()
    out.close()
    renamed: list[Path] = []
    try:
        for writer in (rejects, out):
            writer.commit()
            renamed.append(writer.final)
        write_json_atomic(paths.manifest, manifest)
    except OSError:
        for final in renamed:  # never leave some final names without the others
            final.unlink(missing_ok=True)
        raise


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


__all__ = ["ConvertResult", "InputError", "convert", "explain_partial"]
