"""What stays on the network: rejected records by reason, and the metadata the options drop.

The rejects file keeps whole records (megabytes each with snapshots), so only the head of
each line is read for its outcome, reason and detail; the record itself is never shown.
"""

from __future__ import annotations

import dataclasses
import json
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.convert_sinks import Sink
from owui_replay.converting import Converter
from owui_replay.errors import InputError
from owui_replay.export_reader import open_export
from owui_replay.mapping import Mapper, MappingOptions
from owui_replay.option_names import command_option

_HEAD = 4096
_FIELD = re.compile(r'"(outcome|reason|detail)":"((?:[^"\\]|\\.)*)"')
_NESTED = re.compile(r',"(?:errors|record|payload)":')
_INDEX = re.compile(r'^\{"index":(\d+),"id":("(?:[^"\\]|\\.)*"|null)')

REASONS = {
    "schema": "fails the Open WebUI schema",
    "payload_schema": "the mapped payload fails the Portkey schema",
    "not_a_rating": "not a rating (another feedback type)",
    "no_rating": "data.rating missing or null",
    "not_a_thumb": "a rating other than thumbs up or down (0, or a 1-10 score)",
    "missing_trace_field": "no chat or message id for the trace id",
    "before_since": f"updated before {command_option('convert', 'since')}",
    "not_before_until": f"updated at or after {command_option('convert', 'until')}",
    "duplicate_id": "the same feedback id again, not newer",
    "superseded": "an older version of a rating that changed",
}


@dataclass(frozen=True)
class Reject:
    line: int  # 1-based line of the rejects file
    index: int | None  # the record's index in the export
    record_id: str
    outcome: str
    reason: str
    detail: str


@dataclass
class Rejects:
    lines: int = 0
    by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)  # (outcome, reason)
    rows: list[Reject] = field(default_factory=list)
    damaged: int = 0  # lines that are not reject entries


def read_rejects(path: Path, rows: int) -> Rejects:
    """Count the rejects file by outcome and reason, keeping the first ROWS entries."""
    found = Rejects()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            found.lines += 1
            entry = _head(raw)
            if entry is None:
                found.damaged += 1
                continue
            found.by_reason[entry.get("outcome", "?"), entry.get("reason", "?")] += 1
            if len(found.rows) < rows:
                found.rows.append(
                    Reject(
                        number,
                        entry.get("index"),
                        str(entry.get("id")),
                        str(entry.get("outcome", "?")),
                        str(entry.get("reason", "?")),
                        str(entry.get("detail", "")),
                    )
                )
    return found


def _head(raw: bytes) -> dict[str, Any] | None:
    """index, id, outcome, reason and detail from the start of a reject line (convert writes
    them first); the whole line is parsed only when the head does not say."""
    head = raw[:_HEAD].decode("utf-8", "replace")
    start = _INDEX.match(head)
    own = _NESTED.search(head)  # the entry's own fields come before errors, record, payload
    fields = dict(_FIELD.findall(head[: own.start() if own else len(head)]))
    if start and "outcome" in fields and "reason" in fields:
        entry: dict[str, Any] = {k: json.loads(f'"{v}"') for k, v in fields.items()}
        entry["index"] = int(start.group(1))
        entry["id"] = json.loads(start.group(2))
        return entry
    try:
        whole = json.loads(raw)
    except ValueError:
        return None
    return whole if isinstance(whole, dict) and "outcome" in whole else None


@dataclass
class Dropped:
    """Metadata keys convert made and the options removed, counted over the written lines."""

    keys: Counter[str] = field(default_factory=Counter)
    lines: int = 0  # payloads with at least one key removed
    error: str = ""


class _DropCounter(Sink):
    """Receives convert's payloads made without keep/drop options; counts what the real
    options remove. Memory: one small number per payload (which set of keys it lost)."""

    def __init__(self, mapper: Mapper) -> None:
        super().__init__()
        self.mapper = mapper
        self.sets: dict[tuple[str, ...], int] = {(): 0}
        self.names: list[tuple[str, ...]] = [()]
        self.per_line = array("I")

    def payload(self, line: bytes) -> int:
        metadata = json.loads(line).get("metadata") or {}
        kept = self.mapper.select(dict(metadata))
        lost = tuple(k for k in metadata if k not in kept)
        code = self.sets.get(lost)
        if code is None:
            code = self.sets[lost] = len(self.names)
            self.names.append(lost)
        self.per_line.append(code)
        return super().payload(line)


def dropped_metadata(export: Path, options: MappingOptions) -> Dropped:
    """Convert EXPORT again without the keep/drop options and count, per key, the written
    payloads that carried it before the options removed it."""
    result = Dropped()
    if not options.keep_metadata and not options.drop_metadata:
        return result
    sinks = _DropCounter(Mapper(options))
    unfiltered = dataclasses.replace(options, keep_metadata=(), drop_metadata=())
    try:
        stream = open_export(str(export))
        converted = Converter(unfiltered, sinks).run(stream, progress=False, allow_empty=True)
    except InputError as exc:
        result.error = str(exc)
        return result
    for number, code in enumerate(sinks.per_line):
        if code and number not in converted.superseded:  # superseded payloads are not sent
            result.lines += 1
            result.keys.update(sinks.names[code])
    return result
