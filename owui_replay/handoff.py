"""Names of the files that travel together: OUT.jsonl, OUT.rejects.jsonl, OUT.manifest.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HandoffPaths:
    output: Path
    rejects: Path
    manifest: Path

    @classmethod
    def for_output(cls, output: str | Path) -> HandoffPaths:
        output = Path(output)
        stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
        return cls(
            output=output,
            rejects=output.with_name(stem + ".rejects.jsonl"),
            manifest=output.with_name(stem + ".manifest.json"),
        )
