"""Changes that come from the mapping options, not from Open WebUI: named, and guarded.

The delivery state records which option set produced each delivered version (its digest;
the JSON is kept once per set). A delivered rating whose `updated_at` did not move but whose
payload would now differ because the options differ is "changed only by options": a hand-run
replay sends it and says so; an unattended sync or listen refuses to, until the change is
accepted once (the newly delivered versions then record the new options, so the next run is
quiet). Only the options that shape a payload count: since/until choose records, they do not
change one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from owui_replay.errors import ExitCode, ReplayError
from owui_replay.mapping import MappingOptions
from owui_replay.words import plural

SELECTING = frozenset({"since", "until"})  # choose which records, never change a payload


@dataclass(frozen=True)
class OptionSet:
    """The payload-shaping mapping options of one run, canonically serialised and hashed."""

    digest: str
    text: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(json.loads(self.text))

    @classmethod
    def of(cls, options: dict[str, Any]) -> OptionSet:
        """From MappingOptions.as_dict() or a manifest's `options` of the same shape."""
        shaping = {key: value for key, value in options.items() if key not in SELECTING}
        for key in ("keep_metadata", "drop_metadata"):  # sets of globs: order and repeats
            if isinstance(shaping.get(key), list):  # do not change what they keep or drop
                shaping[key] = sorted(set(shaping[key]))
        text = json.dumps(shaping, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(hashlib.sha256(text.encode("utf-8")).hexdigest(), text)

    @classmethod
    def of_mapping(cls, mapping: MappingOptions) -> OptionSet:
        return cls.of(mapping.as_dict())


def from_manifest(manifest: Any) -> OptionSet | None:
    """The option set a handoff's manifest records; None when it records none this version
    understands (then nothing is attributed to options and nothing is guarded)."""
    try:
        return OptionSet.of(MappingOptions.from_dict(manifest["options"]).as_dict())
    except (KeyError, TypeError, ValueError):
        return None


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Each option that differs, as `name old -> new` (option values only, never payload
    text); the old set unknown to the state is said so."""
    if old is None:
        return ["options not recorded -> " + json.dumps(new, sort_keys=True)]
    names = sorted((set(old) | set(new)) - SELECTING)
    return [f"{n} {old.get(n)!r} -> {new.get(n)!r}" for n in names if old.get(n) != new.get(n)]


def describe(changes: Iterable[str]) -> str:
    return "; ".join(dict.fromkeys(changes)) or "options differ"


class OptionChangeRefused(ReplayError):
    """An unattended run would rewrite delivered ratings only because its mapping options
    differ from those of the delivered versions; nothing was sent (exit 14)."""

    code = ExitCode.OPTION_CHANGE

    def __init__(self, endpoint: str, count: int, changes: list[str], hint: str = "") -> None:
        self.endpoint, self.count, self.changes = endpoint, count, changes
        message = (
            f"{endpoint}: {plural(count, 'delivered rating')} would change only because the "
            f"mapping options differ from those of the delivered version ({describe(changes)}); "
            "nothing was sent"
        )
        super().__init__(message + (f". {hint}" if hint else ""))

    def with_hint(self, hint: str) -> OptionChangeRefused:
        """The same refusal with the caller's advice (the command names its own option)."""
        return OptionChangeRefused(self.endpoint, self.count, self.changes, hint)
