"""What is in an export, counted while streaming: ratings, models, reasons, users, days."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from owui_replay.export_reader import open_export
from owui_replay.mapping import parse_rating
from owui_replay.option_names import option
from owui_replay.schemas import OPENWEBUI_SCHEMA, RecordValidator


@dataclass
class ExportStats:
    """Counts gathered while an export streams past: what `inspect` prints."""

    records: int = 0
    invalid: int = 0
    ratings: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    days: Counter[str] = field(default_factory=Counter)
    arena: int = 0
    first_updated: int | None = None
    last_updated: int | None = None

    def add(self, record: Any, valid: bool) -> None:
        self.records += 1
        if not valid:
            self.invalid += 1
            return
        data = record.get("data") or {}
        meta = record.get("meta") or {}
        self.types[str(record.get("type"))] += 1
        rating = parse_rating(data.get("rating"))
        self.ratings["missing" if rating is None else f"{rating:+d}" if rating else "0"] += 1
        self.models[str(data.get("model_id") or meta.get("model_id") or "(none)")] += 1
        self.reasons[str(data.get("reason") or "(none)")] += 1
        self.users[str(record.get("user_id") or "(none)")] += 1
        if meta.get("arena"):
            self.arena += 1
        updated = int(record["updated_at"])
        self.days[datetime.fromtimestamp(updated, timezone.utc).strftime("%Y-%m-%d")] += 1
        self.first_updated = (
            updated if self.first_updated is None else min(self.first_updated, updated)
        )
        self.last_updated = (
            updated if self.last_updated is None else max(self.last_updated, updated)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "invalid": self.invalid,
            "arena": self.arena,
            "updated_at": {"first": self.first_updated, "last": self.last_updated},
            **{
                name: dict(getattr(self, name).most_common())
                for name in ("ratings", "types", "models", "reasons", "users", "days")
            },
        }

    def render(self, top: int) -> str:
        def iso(ts: int | None) -> str:
            if ts is None:
                return "-"
            return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")

        lines = [
            f"records {self.records}   invalid {self.invalid}   arena {self.arena}",
            f"updated {iso(self.first_updated)} .. {iso(self.last_updated)}",
        ]
        for name in ("ratings", "types", "models", "reasons", "users", "days"):
            counter: Counter[str] = getattr(self, name)
            lines.append(f"\n{name} ({len(counter)})")
            rows = sorted(counter.items()) if name == "days" else counter.most_common()
            shown = rows[-top:] if name == "days" else rows[:top]
            width = max((len(k) for k, _ in shown), default=0)
            lines += [f"  {k:<{width}}  {v:>8}" for k, v in shown]
            if len(rows) > top:
                lines.append(
                    f"  … {len(rows) - top} more ({option('top')}, or {option('json')} for all)"
                )
        return "\n".join(lines) + "\n"


def inspect_export(path: str) -> ExportStats:
    validator = RecordValidator(OPENWEBUI_SCHEMA)
    stats = ExportStats()
    stream = open_export(path)
    try:
        for record in stream.records():
            stats.add(record, validator.is_valid(record))
    finally:
        stream.close()
    return stats
