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
from owui_replay.atomic import partial_path
from owui_replay.convert_sinks import (
    ComparingSink,
    Difference,
    DryRunSink,
    FileSink,
    Sink,
    dumps_line,
    explain_partial,
)
from owui_replay.errors import ExitCode, InputError, ReplayError, UsageError
from owui_replay.export_reader import ExportStream, open_export
from owui_replay.handoff import MANIFEST_FORMAT, HandoffPaths
from owui_replay.mapping import Mapper, MappingOptions, Skip
from owui_replay.option_names import option
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
_NOT_NEWER = "updated_at >= this one"


@dataclass
class ConvertResult:
    """What one conversion did: every record's outcome counted, with the reasons, the
    manifest and a few sample payloads. Its verbs are how the job records outcomes."""

    records: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    paths: HandoffPaths | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    superseded: dict[int, int] = field(default_factory=dict)  # output line -> input index

    def record_written(self, payload: dict[str, Any], wanted_samples: int) -> None:
        self.counts[WRITTEN] += 1
        if len(self.samples) < wanted_samples:
            self.samples.append(payload)

    def record_reject(self, outcome: str, reason: str) -> None:
        self.counts[outcome] += 1
        self.reasons[reason] += 1

    def record_supersession(self, output_line: int, input_index: int) -> None:
        """A written payload whose feedback id came back with a newer updated_at."""
        self.superseded[output_line] = input_index

    def settle_superseded(self) -> None:
        """Once every record is in: the superseded payloads leave the output for the rejects."""
        moved = len(self.superseded)
        self.counts[WRITTEN] -= moved
        self.counts[SUPERSEDED] += moved
        if moved:
            self.reasons["superseded"] += moved

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
    """The latest version of a feedback id met so far, and its output line if written."""

    updated_at: int
    index: int
    line: int | None  # output line when written, else None


class Converter:
    """One conversion's run state: the mapper and validators (built once per run), the
    feedback ids seen so far, the sink that receives the outcomes and the result recording
    them. `run` streams one export through it."""

    def __init__(
        self,
        options: MappingOptions,
        sink: Sink,
        *,
        paths: HandoffPaths | None = None,
        samples: int = 0,
    ) -> None:
        self.options = options
        self.sink = sink
        self.samples = samples
        self.mapper = Mapper(options)
        self.record_validator = RecordValidator(OPENWEBUI_SCHEMA)
        self.payload_validator = RecordValidator(PORTKEY_SCHEMA)
        self.seen: dict[str, _Seen] = {}
        self.result = ConvertResult(paths=paths)

    def run(
        self,
        stream: ExportStream,
        *,
        stderr: IO[str] | None = None,
        progress: bool | None = None,
        allow_empty: bool = False,
    ) -> ConvertResult:
        """Every record of STREAM to the sink; then the manifest, then the sink's commit.
        A failure says where the partial files are, when the sink kept any."""
        try:
            self._stream(stream, stderr or sys.stderr, progress)
            if self.result.records == 0 and not allow_empty:
                self.sink.discard()
                raise InputError(_empty_message(stream))
            self._finish(stream)
        except InputError as exc:
            kept = self.sink.failed()
            if kept is None:
                raise
            raise InputError(f"{exc}; {kept}", exc.code) from None
        except KeyboardInterrupt:
            kept = self.sink.failed()
            if kept is None:
                raise
            raise ReplayError(f"interrupted; {kept}", ExitCode.INTERRUPTED) from None
        finally:
            self.sink.close_quietly()  # committed (so closed) on success; else kept as is
            stream.close()
        return self.result

    def _stream(self, stream: ExportStream, stderr: IO[str], progress: bool | None) -> None:
        bar = byte_bar(stream.size, stream.name, stderr=stderr, enabled=progress)
        count = 0
        with bar, _fewer_collections():
            last = 0
            for count, record in enumerate(stream.records(), start=1):
                self.process(count - 1, record)
                now = stream.raw.bytes_read
                bar.update(now - last)
                last = now
        self.result.records = count

    def _finish(self, stream: ExportStream) -> None:
        result = self.result
        if result.superseded:
            result.settle_superseded()
            self.sink.drop_superseded(result.superseded, _superseded_entry)
        if sum(result.counts.values()) != result.records:  # pragma: no cover - an invariant
            raise AssertionError(f"counts {dict(result.counts)} do not add up to {result.records}")
        result.manifest = build_manifest(stream, self.options, result, self.sink)
        self.sink.commit(result.manifest)

    def process(self, index: int, record: Any) -> None:
        """Decide one record's outcome and send it to the output or the rejects."""
        record_id = record.get("id") if isinstance(record, dict) else None  # parsed JSON: a dict
        if not self.record_validator.is_valid(record) or not isinstance(record_id, str):
            errors = [e.as_dict() for e in self.record_validator.errors(record)]
            self._reject(index, record_id, INVALID, "schema", errors=errors, record=record)
            return
        updated_at = int(record["updated_at"])
        earlier = self.seen.get(record_id)
        if earlier is not None and updated_at <= earlier.updated_at:
            detail = (
                f"feedback id already seen at index {earlier.index} with updated_at >= this one"
            )
            self._reject(index, record_id, DUPLICATE, "duplicate_id", detail, record=record)
            return
        if earlier is not None and earlier.line is not None:
            self.result.record_supersession(earlier.line, earlier.index)
        self.seen[record_id] = _Seen(updated_at, index, None)
        try:
            payload = self.mapper.map(record)
        except Skip as skip:
            outcome = FILTERED if skip.code in FILTER_REASONS else SKIPPED
            original = None if outcome == FILTERED else record
            self._reject(index, record_id, outcome, skip.code, skip.detail, record=original)
            return
        if not self.payload_validator.is_valid(payload):
            errors = [e.as_dict() for e in self.payload_validator.errors(payload)]
            detail = "the mapped payload fails the Portkey schema"
            self._reject(index, record_id, INVALID, "payload_schema", detail, errors, record=record)
            return
        self.seen[record_id].line = self.sink.payload(dumps_line(payload))
        self.result.record_written(payload, self.samples)

    def _reject(
        self,
        index: int,
        record_id: Any,
        outcome: str,
        reason: str,
        detail: str | None = None,
        errors: list[dict[str, str]] | None = None,
        *,
        record: Any = None,
    ) -> None:
        self.sink.reject(_reject_entry(index, record_id, outcome, reason, detail, errors, record))
        self.result.record_reject(outcome, reason)


def reproduce(
    export_path: str, paths: HandoffPaths, options: MappingOptions
) -> tuple[ConvertResult, list[Difference]]:
    """Convert EXPORT again, comparing with the handoff's files instead of writing any."""
    sink = ComparingSink(paths)
    try:
        stream = open_export(export_path)
        result = Converter(options, sink).run(stream, progress=False, allow_empty=True)
        return result, sink.differences(result.superseded)
    finally:
        sink.release()


def convert(
    export_path: str | Path,
    output: str | Path | None,
    options: MappingOptions | None = None,
    *,
    samples: int = 0,
    stderr: IO[str] | None = None,
    progress: bool | None = None,
    allow_empty: bool = False,
) -> ConvertResult:
    """Convert EXPORT to OUTPUT (None: dry run, nothing written). Raises InputError."""
    if isinstance(output, str) and output.endswith(("/", os.sep)):
        raise UsageError(f"-o {output} is a folder; name the output file, e.g. -o {output}f.jsonl")
    paths = HandoffPaths.for_output(output) if output is not None else None
    if paths is not None:
        refuse_clobbering(str(export_path), paths)
    stream = open_export(str(export_path))
    try:
        sink = FileSink(paths) if paths is not None else DryRunSink()
    except BaseException:
        stream.close()
        raise
    converter = Converter(options or MappingOptions(), sink, paths=paths, samples=samples)
    return converter.run(stream, stderr=stderr, progress=progress, allow_empty=allow_empty)


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


def _reject_entry(
    index: int,
    record_id: Any,
    outcome: str,
    reason: str,
    detail: str | None = None,
    errors: list[dict[str, str]] | None = None,
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


def _superseded_entry(index: int, payload: dict[str, Any]) -> dict[str, Any]:
    entry = _reject_entry(
        index,
        payload.get("metadata", {}).get("feedback_id"),
        SUPERSEDED,
        "superseded",
        "a later record has the same feedback id and a newer updated_at",
    )
    entry["payload"] = payload
    return entry


ORIGIN: dict[str, type] = {"source": str, "scope": str, "mode": str, "complete": bool}


def build_manifest(
    stream: ExportStream,
    options: MappingOptions,
    result: ConvertResult,
    sink: Sink,
) -> dict[str, Any]:
    """What was read, with which settings, and what came out: for audit and for replay."""
    manifest: dict[str, Any] = {
        "manifest_version": 1,  # 2 once the input block says where the export came from
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
        "counts": {"records": result.records, **{o: result.counts[o] for o in OUTCOMES}},
        "reasons": dict(sorted(result.reasons.items())),
    }
    if stream.page_total is not None:
        manifest["input"]["page_total"] = stream.page_total
    taken = _taken(stream)
    if taken.get("taken_at") is not None:
        manifest["input"]["taken_at"] = taken["taken_at"]
    came_from = {key: taken[key] for key in ORIGIN if key in taken}
    if came_from:  # format 2: where the export came from, as download recorded it
        manifest["input"].update(came_from)
        manifest["manifest_version"] = MANIFEST_FORMAT
    files = sink.files()
    if files is not None:
        manifest["output"], manifest["rejects"] = files
    return manifest


def _taken(stream: ExportStream) -> dict[str, Any]:
    """What download recorded beside this export (EXPORT.taken-at.json), if it is this very
    file: when it was taken (replay lets the handoff taken later win over a clock that went
    back) and where from (replay --withdraw-missing needs a complete admin export)."""
    sidecar = Path(stream.name + ".taken-at.json")
    try:
        meta = json.loads(sidecar.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("sha256") != stream.sha256():
        return {}  # another file by that name, or the export was changed since
    out: dict[str, Any] = {}
    if isinstance(meta.get("taken_at"), str):
        out["taken_at"] = meta["taken_at"]
    for key, kind in ORIGIN.items():
        if isinstance(meta.get(key), kind):
            out[key] = meta[key]
    return out


def _empty_message(stream: ExportStream) -> str:
    if stream.shape == "page":
        total = f" although its total is {stream.page_total}" if stream.page_total else ""
        hint = " (a page past the end?)" if stream.page_total else ""
        return (
            f"{stream.name}: the page has no items{total}{hint}; nothing to convert "
            f"({option('allow_empty')} accepts it)"
        )
    return (
        f"{stream.name}: the export is an empty array; nothing to convert "
        f"({option('allow_empty')} accepts it)"
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


__all__ = ["ConvertResult", "Converter", "InputError", "convert", "dumps_line", "explain_partial"]
