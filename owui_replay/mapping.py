"""Map one validated Open WebUI feedback record to one Portkey feedback payload.

The rules follow the Portkey cookbook (trace_id "{chat_id}:{message_id}", thumbs to +1/-1,
weight 1, metadata from data and meta) with the corrections that real Open WebUI exports need
(README, "Mapping"): the rating comes only from data.rating, the real model survives arena
ratings, metadata is flat and string-valued, and the snapshot is never copied into the payload.
"""

from __future__ import annotations

import fnmatch
import json
import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from owui_replay.option_names import handoff_option

METADATA_VALUE_LIMIT = 128
TRACE_FIELDS = ("chat_id", "message_id", "feedback_id", "user_id", "model_id", "message_index")
DEFAULT_TRACE_TEMPLATE = "{chat_id}:{message_id}"
COMMENT_FIELDS = ("comment",)


class Skip(Exception):
    """A valid record that produces no payload; `code` is stable, `detail` is for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class MappingOptions:
    """How records become payloads (convert's options); written into the manifest, so
    `verify --export` can run the same mapping again."""

    trace_template: str = DEFAULT_TRACE_TEMPLATE
    up_value: int = 1
    down_value: int = -1
    weight: float = 1.0
    missing_ids: str = "reject"  # or "feedback-id": fill a missing trace field with the record id
    keep_metadata: tuple[str, ...] = ()  # glob patterns; empty keeps everything
    drop_metadata: tuple[str, ...] = ()  # glob patterns, applied after keep
    extra_metadata: tuple[tuple[str, str], ...] = ()
    since: int | None = None
    until: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_template,
            "thumbs_up_value": self.up_value,
            "thumbs_down_value": self.down_value,
            "weight": self.weight,
            "missing_ids": self.missing_ids,
            "keep_metadata": list(self.keep_metadata),
            "drop_metadata": list(self.drop_metadata),
            "metadata": dict(self.extra_metadata),
            "since": self.since,
            "until": self.until,
        }

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> MappingOptions:
        """The options a manifest recorded (as_dict's inverse); ValueError when unknown."""
        known = set(cls().as_dict())
        if not isinstance(options, dict) or set(options) != known:
            got = sorted(options) if isinstance(options, dict) else type(options).__name__
            raise ValueError(f"options {got} are not the ones this version records")
        try:
            return cls(
                trace_template=str(options["trace_id"]),
                up_value=int(options["thumbs_up_value"]),
                down_value=int(options["thumbs_down_value"]),
                weight=float(options["weight"]),
                missing_ids=str(options["missing_ids"]),
                keep_metadata=tuple(options["keep_metadata"]),
                drop_metadata=tuple(options["drop_metadata"]),
                extra_metadata=tuple((str(k), str(v)) for k, v in options["metadata"].items()),
                since=options["since"],
                until=options["until"],
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"options are malformed: {exc}") from None


def template_fields(template: str) -> list[str]:
    """The {fields} a trace-id template uses; ValueError names what is wrong with it."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template {template!r}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TRACE_FIELDS or spec or conversion:
            raise ValueError(
                f"unknown field {{{name}}} in {template!r}; use {', '.join(TRACE_FIELDS)}"
            )
        names.append(name)
    if not names:
        raise ValueError(f"template {template!r} uses no field, so every trace id would be equal")
    return names


def parse_rating(raw: Any) -> int | None:
    """data.rating as an int: ints and numeric strings ("-1"); None when absent or null."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            return None
    return None


def find_history(snapshot: Any) -> Mapping[str, Any] | None:
    """history of the real nested snapshot (snapshot.chat.chat) or of the flat one."""
    if not isinstance(snapshot, dict):
        return None
    chat = snapshot.get("chat")
    if isinstance(chat, dict):
        inner = chat.get("chat")
        history = inner.get("history") if isinstance(inner, dict) else None
        if isinstance(history, dict):
            return history
    history = snapshot.get("history")
    return history if isinstance(history, dict) else None


def message_in_history(history: Mapping[str, Any] | None, message_id: str | None) -> bool:
    """Is the rated message still in the snapshot (it may be deleted or regenerated)?"""
    if history is None or not message_id:
        return False
    messages = history.get("messages")
    if isinstance(messages, dict):
        return message_id in messages
    if isinstance(messages, list):
        return any(isinstance(m, dict) and m.get("id") == message_id for m in messages)
    return False


def thread_length(history: Mapping[str, Any] | None, message_id: str | None) -> int | None:
    """Messages from the root to message_id by parentId (Open WebUI's message_index).

    None when the message is not in the snapshot. A visited set stops at cycles, which
    damaged chats can have.
    """
    if history is None or not message_id:
        return None
    messages = history.get("messages")
    if isinstance(messages, list):
        messages = {m.get("id"): m for m in messages if isinstance(m, dict)}
    if not isinstance(messages, dict) or message_id not in messages:
        return None
    visited: set[str] = set()
    current: Any = message_id
    while current in messages and current not in visited:  # None and non-str ids never match
        visited.add(current)
        message = messages[current]
        current = message.get("parentId") if isinstance(message, dict) else None
    return len(visited)


def snapshot_chat_id(snapshot: Any) -> str | None:
    if isinstance(snapshot, dict):
        chat = snapshot.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        if isinstance(chat_id, str) and chat_id:
            return chat_id
    return None


def scalar_text(value: Any) -> str | None:
    """A metadata string for a scalar; None for null and empty values."""
    if value is None or value == "":
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    """Flatten nested objects to dotted keys; lists of scalars to comma-joined, de-duplicated.

    Records come from a JSON parser, so plain dict and list checks suffice (and are several
    times faster than the Mapping ABC on this per-record path).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{prefix}.{key}" if prefix else key
            kind = type(item)
            if kind is str:  # the common case, handled without a call
                if item:
                    out[name] = item
            elif item is not None:
                flatten(name, item, out)
        return
    if isinstance(value, list):
        if any(isinstance(v, (dict, list)) for v in value):
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        else:
            parts = [t for t in map(scalar_text, value) if t is not None]
            text = ",".join(dict.fromkeys(parts))
        if text:
            out[prefix] = text
        return
    scalar = scalar_text(value)
    if scalar is not None:
        out[prefix] = scalar


def clip(text: str, limit: int = METADATA_VALUE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Mapper:
    """Applies MappingOptions to records; build once per run."""

    options: MappingOptions = field(default_factory=MappingOptions)

    def __post_init__(self) -> None:
        self._fields = template_fields(self.options.trace_template)

    def in_window(self, updated_at: int) -> Skip | None:
        since, until = self.options.since, self.options.until
        if since is not None and updated_at < since:
            return Skip(
                "before_since",
                f"updated_at {updated_at} is before {handoff_option('since')} {since}",
            )
        if until is not None and updated_at >= until:
            return Skip(
                "not_before_until",
                f"updated_at {updated_at} is not before {handoff_option('until')} {until}",
            )
        return None

    def map(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The payload for a schema-valid record, or raise Skip."""
        if record.get("type") != "rating":
            raise Skip("not_a_rating", f"type is {record.get('type')!r}, not 'rating'")
        window = self.in_window(int(record["updated_at"]))
        if window is not None:
            raise window
        data = record.get("data") or {}
        meta = record.get("meta") or {}
        value = self.value(data)
        snapshot = record.get("snapshot")
        message_id = meta.get("message_id")
        history = find_history(snapshot)
        found = message_in_history(history, message_id)
        message_index = meta.get("message_index")
        if message_index is None and found:
            message_index = thread_length(history, message_id)  # walk only when needed
        fields: dict[str, Any] = {
            "chat_id": meta.get("chat_id") or snapshot_chat_id(snapshot),
            "message_id": message_id,
            "feedback_id": record["id"],
            "user_id": record.get("user_id"),
            "model_id": data.get("model_id") or meta.get("model_id"),
            "message_index": message_index,
        }
        trace_id, fallback = self.trace_id(fields, record["id"])
        metadata = self.metadata(record, data, meta, snapshot, message_index, history, found)
        if fallback:
            metadata["trace_id_fallback"] = ",".join(fallback) + "=feedback_id"
        metadata = self.select(metadata)
        payload: dict[str, Any] = {"trace_id": trace_id, "value": value, "weight": self.weight}
        if metadata:
            payload["metadata"] = metadata
        return payload

    def value(self, data: Mapping[str, Any]) -> int:
        """The thumb as Portkey's value, from data.rating only; anything else is a Skip."""
        rating = parse_rating(data.get("rating"))
        if rating is None:
            raise Skip("no_rating", "data.rating is missing or null")
        if rating == 1:
            return self.options.up_value
        if rating == -1:
            return self.options.down_value
        raise Skip("not_a_thumb", f"data.rating is {rating}, not a thumbs up (1) or down (-1)")

    def trace_id(self, fields: dict[str, Any], feedback_id: str) -> tuple[str, list[str]]:
        """The template filled in, and which fields fell back to the feedback id."""
        fallback: list[str] = []
        for name in self._fields:
            if fields[name] in (None, ""):
                if self.options.missing_ids != "feedback-id":
                    raise Skip(
                        "missing_trace_field",
                        f"{name} is missing (needed by {handoff_option('trace_id')})",
                    )
                fields[name] = feedback_id
                fallback.append(name)
        trace_id = self.options.trace_template.format_map(
            {name: str(fields[name]) for name in self._fields}
        )
        return trace_id, fallback

    @property
    def weight(self) -> int | float:
        w = self.options.weight
        return int(w) if float(w).is_integer() else w

    def metadata(
        self,
        record: Mapping[str, Any],
        data: Mapping[str, Any],
        meta: Mapping[str, Any],
        snapshot: Any,
        message_index: Any,
        history: Mapping[str, Any] | None,
        found: bool,
    ) -> dict[str, str]:
        """The cookbook's data ∪ meta, flat; a meta key never overwrites a different data value."""
        out: dict[str, str] = {}
        flatten("", data, out)
        meta_flat: dict[str, str] = {}
        flatten("", meta, meta_flat)
        for key, text in meta_flat.items():
            if key in out and out[key] != text:
                out[f"meta.{key}"] = text  # e.g. arena: meta.model_id is the "arena-model" wrapper
            else:
                out[key] = text
        for key in ("details", "base_models"):  # the flat (seed) shape keeps these at top level
            if key in record:
                flatten(key, record[key], out)
        extras = {
            "feedback_id": record["id"],
            "user_id": record.get("user_id"),
            "_user": record.get("user_id"),
            "snapshot_chat_id": snapshot_chat_id(snapshot),
            "message_index": message_index,
            "created_at": record.get("created_at"),
            "updated_at": record.get("updated_at"),
            "version": record.get("version"),
        }
        for key, value in extras.items():
            scalar = scalar_text(value)
            if scalar is not None:
                out[key] = scalar
        if history is not None:
            out["rated_message_in_snapshot"] = "true" if found else "false"
        for key, value in self.options.extra_metadata:
            out[key] = value
        limit = METADATA_VALUE_LIMIT
        if max(map(len, out.values()), default=0) > limit or max(map(len, out), default=0) > limit:
            return {clip(k): clip(v) for k, v in out.items()}
        return out

    def select(self, metadata: dict[str, str]) -> dict[str, str]:
        keep, drop = self.options.keep_metadata, self.options.drop_metadata
        if not keep and not drop:
            return metadata
        return {
            key: metadata[key]
            for key in sorted(metadata)
            if (not keep or _matches(key, keep)) and not _matches(key, drop)
        }


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)
