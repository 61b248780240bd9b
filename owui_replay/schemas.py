"""The bundled JSON Schemas and the validators built from them, once per run.

The verdict (valid or not) comes from jsonschema-rs when it is installed, because it is
several times faster than pure-Python jsonschema on the hot path. Every error that is
reported comes from jsonschema itself, the reference implementation, so messages and JSON
paths do not depend on which validator gave the verdict. tests/test_schemas.py checks that
both give the same verdict, on the fixtures and on generated records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

jsonschema_rs: Any
try:  # optional accelerator; the reference validator alone gives the same answers
    import jsonschema_rs
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    jsonschema_rs = None

OPENWEBUI_SCHEMA = "openwebui-feedback.schema.json"
PORTKEY_SCHEMA = "portkey-feedback.schema.json"
MAX_VALUE_CHARS = 80
MAX_ERRORS = 10


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Read a schema shipped inside the package (works from a wheel or a checkout)."""
    text = resources.files("owui_replay").joinpath("schemas").joinpath(name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_version(name: str) -> str:
    """The schema's $id and a short content hash, for the manifest."""
    schema = load_schema(name)
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
    return f"{name}#sha256:{hashlib.sha256(canonical).hexdigest()[:16]}"


def truncate_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """Render an offending value briefly: snapshots can be megabytes."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_path(parts: Any) -> str:
    """A JSON Pointer for an error location ('' is the record itself)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class SchemaError:
    """One validation error as reports show it: where in the record, and what is wrong."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class RecordValidator:
    """One compiled validator reused for every record (per-call validate() is ~40x slower)."""

    def __init__(self, name: str, *, use_fast: bool = True) -> None:
        self.name = name
        schema = load_schema(name)
        cls = jsonschema.validators.validator_for(schema)
        # bundled schemas are checked against the metaschema in tests; local $refs are inlined
        # because resolving them dominates the cost of reporting a rejected record's errors
        self._reference = cls(inline_local_refs(schema))
        self._fast: Callable[[Any], bool] | None = None
        self._heavy: dict[str, Callable[[Any], bool]] = {}
        if use_fast and jsonschema_rs is not None:
            self._fast = jsonschema_rs.validator_for(schema).is_valid
            self._heavy = _heavy_property_validators(schema)
        self.accelerated = self._fast is not None

    def is_valid(self, instance: Any) -> bool:
        if self._fast is not None:
            return self._fast(instance)
        return self._reference.is_valid(instance)

    def reference_is_valid(self, instance: Any) -> bool:
        return self._reference.is_valid(instance)

    def errors(self, instance: Any, limit: int = MAX_ERRORS) -> list[SchemaError]:
        """Up to `limit` errors, deepest first within each branch, values truncated.

        The reference validator reports them. A heavy optional subtree (the snapshot: the
        whole chat) that the fast validator finds valid on its own is left out of that pass,
        which would otherwise walk every message of the chat for nothing.
        """
        if isinstance(instance, dict) and self._heavy:
            skip = [k for k, ok in self._heavy.items() if k in instance and ok(instance[k])]
            if skip:
                instance = {k: v for k, v in instance.items() if k not in skip}
        found: list[SchemaError] = []
        ordered = sorted(self._reference.iter_errors(instance), key=lambda e: list(e.path))
        for error in ordered:
            found.extend(_leaf_errors(error))
        unique = list(dict.fromkeys(found))
        return unique[:limit]


def inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema with every "#/$defs/NAME" reference replaced by its target.

    Only for schemas without recursive definitions (ours); a $ref with sibling keywords
    becomes an allOf, which is what 2020-12 means by it.
    """
    defs = schema.get("$defs", {})

    def inline(node: Any, depth: int = 0) -> Any:
        if depth > 50:
            raise ValueError("recursive $ref: cannot inline")
        if isinstance(node, dict):
            ref = node.get("$ref")
            rest = {k: inline(v, depth) for k, v in node.items() if k not in ("$ref", "$defs")}
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = inline(defs[ref[len("#/$defs/") :]], depth + 1)
                return {"allOf": [target], **rest} if rest else target
            return rest
        if isinstance(node, list):
            return [inline(v, depth) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


HEAVY_PROPERTIES = ("snapshot",)


def _heavy_property_validators(schema: dict[str, Any]) -> dict[str, Callable[[Any], bool]]:
    """Fast validators for heavy top-level properties that may be absent."""
    validators: dict[str, Callable[[Any], bool]] = {}
    for key in HEAVY_PROPERTIES:
        sub = schema.get("properties", {}).get(key)
        if sub is None or key in schema.get("required", ()):
            continue
        standalone = {"$schema": schema["$schema"], "$defs": schema.get("$defs", {}), **sub}
        validators[key] = jsonschema_rs.validator_for(standalone).is_valid
    return validators


def _leaf_errors(error: jsonschema.ValidationError) -> list[SchemaError]:
    """Replace an anyOf/oneOf error by its deepest branch error, which names the real field.

    "data matches none of the allowed shapes" helps nobody when the cause is
    /data/rating being a boolean.
    """
    if error.context:
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) > len(error.absolute_path):
            return _leaf_errors(deepest)
    return [SchemaError(json_path(error.absolute_path), _short_message(error))]


def _short_message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message with the offending instance shortened."""
    if error.validator in ("type", "pattern", "minimum", "maximum", "minLength", "maxLength"):
        return f"{truncate_value(error.instance)} fails {error.validator} {error.validator_value!r}"
    if error.validator == "anyOf":
        return f"{truncate_value(error.instance)} matches none of the allowed shapes"
    message = error.message
    return message if len(message) <= 200 else message[:199] + "…"
