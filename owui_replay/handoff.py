"""Names of the files that travel together beside OUT.jsonl.

convert writes OUT.rejects.jsonl and OUT.manifest.json; replay writes OUT.journal.jsonl and
OUT.failed.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The manifest's format, a number of its own (not the tool's version): convert writes it, verify
# and replay refuse a manifest whose format is newer than this. 2: input may say where the
# export came from (source, scope, mode, complete: download's OUT.taken-at.json).
MANIFEST_FORMAT = 2


@dataclass(frozen=True)
class HandoffPaths:
    """The paths of one handoff's files, all derived from the JSONL's name."""

    output: Path
    rejects: Path
    manifest: Path
    journal: Path
    failed: Path

    @classmethod
    def for_output(cls, output: str | Path) -> HandoffPaths:
        output = Path(output)
        stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
        return cls(
            output=output,
            rejects=output.with_name(stem + ".rejects.jsonl"),
            manifest=output.with_name(stem + ".manifest.json"),
            journal=output.with_name(stem + ".journal.jsonl"),
            failed=output.with_name(stem + ".failed.jsonl"),
        )
