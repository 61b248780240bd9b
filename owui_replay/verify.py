"""What an auditor runs before approving a handoff: do the files match their manifest?"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.atomic import hash_file, sha256_file
from owui_replay.errors import InputError
from owui_replay.feedback_file import scan_feedback
from owui_replay.handoff import HandoffPaths


@dataclass
class Report:
    checks: list[tuple[bool, str]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> bool:
        self.checks.append((ok, text))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.checks)

    def render(self) -> str:
        lines = [("ok    " if ok else "FAIL  ") + text for ok, text in self.checks]
        lines += ["      " + fact for fact in self.facts]
        verdict = "handoff verified" if self.ok else "handoff does NOT match its manifest"
        return "\n".join([*lines, verdict]) + "\n"


def verify(feedback: Path, export: Path | None = None) -> Report:
    report = Report()
    paths = HandoffPaths.for_output(feedback)
    if not report.check(paths.manifest.exists(), f"manifest {paths.manifest.name} is present"):
        return report
    try:
        manifest = json.loads(paths.manifest.read_text("utf-8"))
        output, rejects, counts = manifest["output"], manifest["rejects"], manifest["counts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.check(False, f"manifest is readable ({exc})")
        return report
    try:
        scanned = scan_feedback(feedback)
    except InputError as exc:
        report.check(False, f"every line is a Portkey feedback payload: {exc}")
        return report
    report.check(True, f"all {scanned.lines} lines are Portkey feedback payloads")
    report.check(
        scanned.sha256 == output.get("sha256") and scanned.lines == output.get("lines"),
        f"{feedback.name}: sha256 {scanned.sha256[:16]}… and {scanned.lines} lines match",
    )
    if paths.rejects.exists():
        digest, lines = hash_file(paths.rejects)
        report.check(
            digest == rejects.get("sha256") and lines == rejects.get("lines"),
            f"{paths.rejects.name}: sha256 {digest[:16]}… and {lines} lines match",
        )
    else:
        report.check(False, f"{paths.rejects.name} is present")
    outcomes = {k: v for k, v in counts.items() if k != "records"}
    report.check(
        sum(outcomes.values()) == counts.get("records")
        and outcomes.get("written") == scanned.lines
        and counts.get("records", 0) - outcomes.get("written", 0) == rejects.get("lines"),
        f"counts add up: {counts.get('records')} records = "
        + " + ".join(f"{v} {k}" for k, v in outcomes.items() if v),
    )
    if export is not None:
        actual = sha256_file(export)
        report.check(
            actual == manifest["input"].get("sha256"),
            f"export {export.name}: sha256 {actual[:16]}… matches the manifest's input",
        )
    report.facts = _facts(feedback, manifest)
    return report


def _facts(feedback: Path, manifest: dict[str, Any]) -> list[str]:
    """What will be sent, in a few lines an auditor can read."""
    values: Counter[int] = Counter()
    keys: Counter[str] = Counter()
    users: set[str] = set()
    times: list[int] = []
    with open(feedback, "rb") as handle:
        for raw in handle:
            payload = json.loads(raw)
            values[payload["value"]] += 1
            metadata = payload.get("metadata") or {}
            keys.update(metadata.keys())
            if "_user" in metadata:
                users.add(metadata["_user"])
            if str(metadata.get("updated_at", "")).isdigit():
                times.append(int(metadata["updated_at"]))
    facts = [
        "values: " + ", ".join(f"{v:+d} x{n}" for v, n in sorted(values.items())),
        f"users: {len(users)}; comments included: {keys.get('comment', 0)}",
        "metadata keys: " + ", ".join(sorted(keys)),
        f"options: trace_id {manifest['options'].get('trace_id')!r}, "
        f"dropped {manifest['options'].get('drop_metadata')}",
    ]
    if times:
        facts.append(f"updated_at from {min(times)} to {max(times)}")
    return facts
