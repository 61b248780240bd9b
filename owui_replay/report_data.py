"""What a handoff sends, aggregated in one streaming pass: the numbers behind `report`.

Memory stays flat whatever the file's size: counters are keyed by things with few values
(models, days, raters, metadata keys), and of the rows a person reads (free text, personal
data, withdrawals) only the first N are kept, with the totals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from owui_replay.report_pii import KINDS, find

_MAX_CACHED = 50_000  # metadata values are at most 128 characters: a few MB at most
UP, DOWN, OTHER = "up", "down", "other"
SIDES = (UP, DOWN, OTHER)
NO_MODEL = "(no model_id)"
NO_RATER = "(no user id)"
NO_DAY = -1  # the day of a line without a numeric updated_at
MAX_TIME_DIGITS = 11  # epoch seconds up to the year 5138: beyond it a date cannot be written

# The leaf names of metadata keys whose values are what people typed or chose
FREE_TEXT = frozenset({"comment", "reason", "tags"})
# Keys convert fills with ids, times and flags: not scanned for personal data (a UUID or an
# epoch time would only be noise); every other value is.
STRUCTURAL = frozenset(
    {
        "feedback_id", "user_id", "_user", "chat_id", "message_id", "snapshot_chat_id",
        "created_at", "updated_at", "version", "message_index", "rating", "details.rating",
        "rated_message_in_snapshot", "arena", "withdrawn", "trace_id_fallback",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TextRow:
    """One metadata value that leaves, where it is, and what looks personal in it."""

    line: int  # 1-based line of the JSONL
    feedback_id: str
    key: str
    value: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class LineRow:
    """One line named in a table (a withdrawal)."""

    line: int
    feedback_id: str
    model: str
    day: int
    value: Any


@dataclass
class Leaving:
    """Everything counted about the lines that leave; `visit` is scan_feedback's callback."""

    up_value: int = 1
    down_value: int = -1
    rows: int = 500
    lines: int = 0
    byte_count: int = 0
    values: Counter[Any] = field(default_factory=Counter)
    weights: Counter[Any] = field(default_factory=Counter)
    models: Counter[tuple[str, str]] = field(default_factory=Counter)
    days: Counter[tuple[int, str]] = field(default_factory=Counter)
    raters: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    text_lines: int = 0  # lines with at least one
    text_by_key: Counter[str] = field(default_factory=Counter)
    text_rows: list[TextRow] = field(default_factory=list)
    pii_matches: Counter[str] = field(default_factory=Counter)
    pii_lines: Counter[str] = field(default_factory=Counter)  # lines with at least one, per kind
    pii_any_lines: int = 0
    pii_keys: Counter[str] = field(default_factory=Counter)  # values with a hit, per key
    pii_values: int = 0
    pii_rows: list[TextRow] = field(default_factory=list)
    withdrawn: int = 0
    withdrawn_rows: list[LineRow] = field(default_factory=list)
    unreadable: str = ""  # why the lines could not all be read (then the counts are partial)

    def __post_init__(self) -> None:
        # (value, weight, model, day) -> lines: one count a line instead of four
        self._ratings: Counter[tuple[Any, Any, str, int]] = Counter()
        self._shapes: dict[tuple[str, ...], list[tuple[str, bool]]] = {}
        self._shape_lines: Counter[tuple[str, ...]] = Counter()  # lines of each cached shape
        self._found: dict[str, list[tuple[int, int, str]]] = {}
        self._finished = False

    def finish(self) -> Leaving:
        """Fold the per-line counts into the tables; call once, after the last line."""
        if self._finished:
            return self
        self._finished = True
        for (value, weight, model, day), n in self._ratings.items():
            side = self.side(value)
            self.values[value] += n
            self.weights[weight] += n
            self.models[model, side] += n
            self.days[day, side] += n
        for shape, n in self._shape_lines.items():
            self._count_shape(shape, n)
        return self

    def absorb(self, later: Leaving) -> None:
        """Add the counts of LATER, made over the lines that follow these ones (its line
        numbers start at 1 again), as if one pass had visited them all; before finish()."""
        offset = self.lines
        self.lines += later.lines
        self.byte_count += later.byte_count
        self.raters.update(later.raters)
        self.keys.update(later.keys)
        self.text_by_key.update(later.text_by_key)
        self.pii_matches.update(later.pii_matches)
        self.pii_lines.update(later.pii_lines)
        self.pii_keys.update(later.pii_keys)
        self._ratings.update(later._ratings)
        self._shape_lines.update(later._shape_lines)
        self.text_lines += later.text_lines
        self.pii_any_lines += later.pii_any_lines
        self.pii_values += later.pii_values
        self.withdrawn += later.withdrawn
        for shape, scanned in later._shapes.items():
            if len(self._shapes) >= _MAX_CACHED:
                break
            self._shapes.setdefault(shape, scanned)
        room = self.rows - len(self.text_rows)
        self.text_rows += [replace(r, line=r.line + offset) for r in later.text_rows[:room]]
        room = self.rows - len(self.pii_rows)
        self.pii_rows += [replace(r, line=r.line + offset) for r in later.pii_rows[:room]]
        room = self.rows - len(self.withdrawn_rows)
        self.withdrawn_rows += [
            replace(r, line=r.line + offset) for r in later.withdrawn_rows[:room]
        ]

    def forget_cache(self) -> None:
        """Drop the remembered searches (up to a few MB) before this is sent elsewhere."""
        self._found = {}

    def _count_shape(self, shape: tuple[str, ...], lines: int) -> None:
        """Keys and free-text values of LINES lines of one metadata shape (every metadata
        value is a string, so the shape says which free text a line carries)."""
        free = [k for k, is_free in self._shapes.get(shape) or self._scanned(shape) if is_free]
        for key in shape:
            self.keys[key] += lines
        for key in free:
            self.text_by_key[key] += lines
        if free:
            self.text_lines += lines

    @property
    def text_values(self) -> int:
        """Free-text values, all of them."""
        return sum(self.text_by_key.values())

    def side(self, value: Any) -> str:
        if value == self.up_value:
            return UP
        return DOWN if value == self.down_value else OTHER

    def visit(self, number: int, payload: Any, raw: bytes) -> None:
        """Count one valid line (0-based NUMBER) of the JSONL: a few µs a line (locals and one
        counter for value, weight, model and day), so a million lines add seconds to the
        pass that validates them."""
        self.lines += 1
        self.byte_count += len(raw)
        metadata = payload.get("metadata") or {}
        model = metadata.get("model_id") or NO_MODEL
        day = day_of(metadata.get("updated_at"))
        self._ratings[payload["value"], payload.get("weight", 1), model, day] += 1
        self.raters[metadata.get("_user") or metadata.get("user_id") or NO_RATER] += 1
        shape = tuple(metadata)
        scanned = self._shapes.get(shape)
        if scanned is not None:
            self._shape_lines[shape] += 1
        else:
            scanned = self._new_shape(shape)
        if metadata.get("withdrawn") == "true":
            self._withdrawal(number, metadata, model, day, payload["value"])
        self._texts(number, metadata, scanned)

    def _texts(self, number: int, metadata: Any, scanned: list[tuple[str, bool]]) -> None:
        """Search a line's text values for personal data (each distinct text once) and keep
        the first rows of them for the page."""
        cache = self._found
        line_kinds: set[str] | None = None
        for key, free in scanned:
            text = metadata[key]
            found = cache.get(text)
            if found is None:
                found = self._find(text)
            if free and len(self.text_rows) < self.rows:
                self.text_rows.append(self._row(number, metadata, key, text, found))
            if found:
                line_kinds = line_kinds or set()
                self._personal(number, metadata, key, text, found, line_kinds)
        if line_kinds:
            self.pii_any_lines += 1
            self.pii_lines.update(line_kinds)

    def _withdrawal(self, number: int, metadata: Any, model: str, day: int, value: Any) -> None:
        self.withdrawn += 1
        if len(self.withdrawn_rows) < self.rows:
            feedback_id = str(metadata.get("feedback_id", ""))
            self.withdrawn_rows.append(LineRow(number + 1, feedback_id, model, day, value))

    def _personal(
        self,
        number: int,
        metadata: Any,
        key: str,
        text: str,
        found: list[tuple[int, int, str]],
        line_kinds: set[str],
    ) -> None:
        self.pii_values += 1
        self.pii_keys[key] += 1
        self.pii_matches.update(kind for _s, _e, kind in found)
        line_kinds.update(kind for _s, _e, kind in found)
        if len(self.pii_rows) < self.rows:
            self.pii_rows.append(self._row(number, metadata, key, text, found))

    def _new_shape(self, shape: tuple[str, ...]) -> list[tuple[str, bool]]:
        """The keys of a metadata shape worth scanning (not ids or times), and which are free
        text; shapes repeat, so this runs once per shape, not once per line."""
        scanned = self._scanned(shape)
        if len(self._shapes) < _MAX_CACHED:
            self._shapes[shape] = scanned
            self._shape_lines[shape] += 1
        else:
            self._count_shape(shape, 1)
        return scanned

    @staticmethod
    def _scanned(shape: tuple[str, ...]) -> list[tuple[str, bool]]:
        return [(k, k.rpartition(".")[2] in FREE_TEXT) for k in shape if k not in STRUCTURAL]

    def _find(self, text: Any) -> list[tuple[int, int, str]]:
        """find(), remembered for values that repeat (model names, reasons, tags)."""
        found = find(text) if isinstance(text, str) else []
        if len(self._found) < _MAX_CACHED:
            self._found[text] = found
        return found

    @staticmethod
    def _row(
        number: int, metadata: Any, key: str, text: str, found: list[tuple[int, int, str]]
    ) -> TextRow:
        kinds = tuple(dict.fromkeys(kind for _s, _e, kind in found))
        return TextRow(number + 1, str(metadata.get("feedback_id", "")), key, text, kinds)

    def by_model(self) -> list[tuple[str, int, int, int]]:
        """(model, up, down, other), most rated first."""
        names = {model for model, _side in self.models}
        rows = [(m, self.models[m, UP], self.models[m, DOWN], self.models[m, OTHER]) for m in names]
        return sorted(rows, key=lambda r: (-(r[1] + r[2] + r[3]), r[0]))

    def by_day(self) -> list[tuple[int, int, int, int]]:
        """(day number since 1970-01-01, or NO_DAY; up, down, other), in order."""
        days = sorted({day for day, _side in self.days})
        return [(d, self.days[d, UP], self.days[d, DOWN], self.days[d, OTHER]) for d in days]

    def pii_total(self) -> int:
        return sum(self.pii_matches[kind] for kind in KINDS)


def day_of(updated_at: Any) -> int:
    """The day (since 1970-01-01) of a line's `updated_at`; NO_DAY unless it is 1 to
    MAX_TIME_DIGITS ASCII digits ('²' passes isdigit but not int(); 40 digits overflow a date)."""
    if (
        updated_at
        and len(updated_at) <= MAX_TIME_DIGITS
        and updated_at.isascii()
        and updated_at.isdigit()
    ):
        return int(updated_at) // 86400
    return NO_DAY
