"""The listener's audit trail: one folder a day that `verify --export` and `inspect` accept.

While a day lasts, every record the listener fetched and brought to an outcome is appended to
WORKDIR/audit/DAY/records.jsonl (the record as Open WebUI answered it; no event, so no actor),
and every withdrawal to withdrawn.jsonl. Once the day is over (checked by the worker, and at
start-up for days a stopped listener left open), the day is sealed: export.json holds the
newest version of each record of that day, as an export would, and convert turns it into
feedback.jsonl, its rejects and its manifest with the listener's own mapping options: the
same code and options that produced what was sent, so `owui-replay verify feedback.jsonl
--export export.json` checks the day like any handoff. Sealing is idempotent: a day that has
its manifest is left alone; a seal cut short is redone from records.jsonl.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from owui_replay.atomic import write_bytes_atomic
from owui_replay.converting import convert
from owui_replay.handoff import HandoffPaths
from owui_replay.mapping import MappingOptions

AUDIT = "audit"
RECORDS = "records.jsonl"
WITHDRAWN = "withdrawn.jsonl"


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


class DailyAudit:
    """The listener's audit trail: a folder per day with what it sent, in convert's format."""

    def __init__(self, workdir: Path, mapping: MappingOptions) -> None:
        self.root = workdir / AUDIT
        self.mapping = mapping
        self._lock = threading.Lock()

    def record(self, record: Any) -> None:
        """A fetched record that reached its outcome (sent, already held, or skipped)."""
        self._append(RECORDS, record)

    def withdrawn(self, feedback_id: str, portkey_id: str, payload: dict[str, Any]) -> None:
        entry = {"feedback_id": feedback_id, "portkey_id": portkey_id, "payload": payload,
                 "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
        self._append(WITHDRAWN, entry)

    def _append(self, name: str, document: Any) -> None:
        line = (json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        folder = self.root / today()
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / name, "ab+") as handle:
                end = handle.seek(0, os.SEEK_END)
                if end and handle.seek(end - 1) >= 0 and handle.read(1) != b"\n":
                    line = b"\n" + line  # end the line a crash cut, so this one stays whole
                handle.write(line)

    def seal_finished_days(self) -> list[Path]:
        """Seal every day before today that is not sealed yet; returns the folders sealed."""
        if not self.root.is_dir():
            return []
        sealed = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if folder.name < today() and self.seal(folder):
                sealed.append(folder)
        return sealed

    def seal(self, folder: Path) -> bool:
        """Write export.json and convert it; False when already sealed or empty."""
        paths = HandoffPaths.for_output(folder / "feedback.jsonl")
        records = folder / RECORDS
        if paths.manifest.exists() or not records.exists():
            return False
        newest: dict[str, Any] = {}
        with open(records, encoding="utf-8") as handle:
            for text in handle:
                try:
                    record = json.loads(text)
                except ValueError:
                    continue  # a line cut by a crash: that outcome is recorded again later
                earlier = newest.get(record["id"])
                if earlier is None or record["updated_at"] >= earlier["updated_at"]:
                    newest[record["id"]] = record
        export = folder / "export.json"
        body = json.dumps(list(newest.values()), ensure_ascii=False).encode("utf-8")
        write_bytes_atomic(export, body)
        convert(export, paths.output, self.mapping, allow_empty=True, progress=False)
        return True
