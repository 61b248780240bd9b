"""What an auditor runs before approving a handoff: do the files match their manifest, and
(with the export) are they exactly what convert makes of it?"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay._version import __version__
from owui_replay.approvals import (
    Checked,
    approvals_dir,
    check_signatures,
    read_signature,
    sign,
)
from owui_replay.atomic import hash_file, sha256_file
from owui_replay.converting import OUTCOMES, WRITTEN, reproduce
from owui_replay.errors import InputError
from owui_replay.feedback_file import FeedbackFile, scan_feedback
from owui_replay.handoff import MANIFEST_FORMAT, HandoffPaths
from owui_replay.mapping import MappingOptions
from owui_replay.option_names import option


@dataclass
class Report:
    """verify's checks (each OK or FAIL), the handoff's facts and the signatures seen."""

    checks: list[tuple[bool, str]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    signatures: list[Checked] = field(default_factory=list)
    signatures_checked: bool = False

    def check(self, ok: bool, text: str) -> bool:
        self.checks.append((ok, text))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.checks)

    def render(self) -> str:
        lines = [("ok    " if ok else "FAIL  ") + text for ok, text in self.checks]
        lines += ["      " + fact for fact in self.facts]
        for signature in self.signatures:
            lines.append("sig   " + signature.describe())
        verdict = "handoff verified" if self.ok else "handoff does NOT match its manifest"
        return "\n".join([*lines, verdict]) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [{"ok": ok, "text": text} for ok, text in self.checks],
            "facts": self.facts,
            "signatures": [
                {
                    "file": s.path.name,
                    "fingerprint": s.fingerprint,
                    "principals": s.principals,
                    "problem": s.problem,
                }
                for s in self.signatures
            ],
            "signatures_checked": self.signatures_checked,
        }


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a manifest's shape (a hand edit, another tool), or None."""
    if not isinstance(manifest, dict):
        return "the manifest is not a JSON object"
    return _format_problem(manifest) or _files_problem(manifest) or _counts_problem(manifest)


def _format_problem(manifest: dict[str, Any]) -> str | None:
    fmt = manifest.get("manifest_version")
    if isinstance(fmt, int) and _count(fmt) and 1 <= fmt <= MANIFEST_FORMAT:
        return None
    return (
        f'"manifest_version" is {json.dumps(fmt)[:40]}: this owui-replay reads formats 1 to '
        f"{MANIFEST_FORMAT}"
    )


def _files_problem(manifest: dict[str, Any]) -> str | None:
    for part in ("output", "rejects"):
        entry = manifest.get(part)
        if not isinstance(entry, dict):
            return f'"{part}" is {json.dumps(entry)}, not an object'
        if not isinstance(entry.get("sha256"), str) or not _count(entry.get("lines")):
            return f'"{part}" needs a sha256 string and a whole number of lines'
    for part in ("input", "tool", "options"):
        if not isinstance(manifest.get(part), dict):
            return f'"{part}" is missing or not an object'
    return None


def _counts_problem(manifest: dict[str, Any]) -> str | None:
    counts = manifest.get("counts")
    if not isinstance(counts, dict) or not all(_count(v) for v in counts.values()):
        return f'"counts" must map outcomes to whole numbers, not {json.dumps(counts)[:80]}'
    unknown = set(counts) - {"records", *OUTCOMES}
    if unknown or "records" not in counts:
        return f'"counts" has unknown outcomes {sorted(unknown)} or no "records"'
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class Approval:
    """approve's result: the verify report, and the signature file when it signed."""

    report: Report
    signature: Path | None  # None: the handoff did not verify, nothing was signed
    fingerprint: str = ""


def approve(
    feedback: str | Path,
    key: str | Path,
    export: str | Path | None = None,
    *,
    accept_other_version: bool = False,
) -> Approval:
    """Every verify check first; only when all pass, sign the manifest with KEY."""
    report = verify(feedback, export, accept_other_version=accept_other_version)
    if not report.ok:
        return Approval(report, None)
    signature = sign(HandoffPaths.for_output(Path(feedback)).manifest, Path(key))
    return Approval(report, signature, read_signature(signature).fingerprint)


def verify(
    feedback: str | Path,
    export: str | Path | None = None,
    *,
    accept_other_version: bool = False,
    allowed_signers: str | Path | None = None,
    visit: Callable[[int, Any, bytes], None] | None = None,
    facts: bool = True,
    scan: Callable[[Path], FeedbackFile] | None = None,
) -> Report:
    """Check a handoff against its manifest (and, with EXPORT, reproduce it); never raises
    for a bad handoff: every problem is a FAIL line in the report.

    `visit` sees every valid line as the check reads it (report aggregates in that one pass);
    `facts=False` leaves out the facts, which take another pass over the lines; `scan`
    replaces the pass itself (report's, split across the cores: it must raise InputError as
    scan_feedback does)."""
    feedback = Path(feedback)
    export = Path(export) if export is not None else None
    allowed_signers = Path(allowed_signers) if allowed_signers is not None else None
    report = Report()
    paths = HandoffPaths.for_output(feedback)
    manifest = _read_manifest(report, paths.manifest)
    if manifest is None:
        return report
    _check_made_by(report, manifest, accept_other_version)
    try:
        scanned = scan(feedback) if scan is not None else scan_feedback(feedback, visit)
    except InputError as exc:
        report.check(False, f"every line is a Portkey feedback payload: {exc}")
        return report
    report.check(True, f"all {scanned.lines} lines are Portkey feedback payloads")
    output, rejects, counts = manifest["output"], manifest["rejects"], manifest["counts"]
    report.check(
        scanned.sha256 == output["sha256"] and scanned.lines == output["lines"],
        f"{feedback.name}: sha256 {scanned.sha256[:16]}… and {scanned.lines} lines match",
    )
    _check_rejects(report, paths, rejects, counts, scanned)
    if export is not None:
        _check_export(report, export, paths, manifest)
    if facts:
        report.facts = _facts(feedback, manifest)
    _list_signatures(report, paths.manifest, allowed_signers)
    return report


def _read_manifest(report: Report, path: Path) -> dict[str, Any] | None:
    """The manifest when it is there, readable and well-formed (each a check line)."""
    if not report.check(path.exists(), f"manifest {path.name} is present"):
        return None
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        report.check(False, f"manifest is readable JSON ({exc})")
        return None
    problem = _manifest_problem(manifest)
    if not report.check(
        problem is None, f"manifest is well-formed{f': {problem}' if problem else ''}"
    ):
        return None
    return dict(manifest)


def _check_made_by(report: Report, manifest: dict[str, Any], accept_other_version: bool) -> None:
    made_by = str(manifest["tool"].get("version"))
    same = made_by == __version__
    accept = option("accept_other_version")
    report.check(
        same or accept_other_version,
        f"made by owui-replay {made_by}"
        + ("" if same else f", this is {__version__}")
        + ("" if same or not accept_other_version else f" (accepted with {accept})")
        + ("" if same or accept_other_version else f": pass {accept} to accept it"),
    )


def _check_rejects(
    report: Report,
    paths: HandoffPaths,
    rejects: dict[str, Any],
    counts: dict[str, int],
    scanned: FeedbackFile,
) -> None:
    """Hash, line count, and the counts by outcome recomputed from the files themselves."""
    if not report.check(paths.rejects.exists(), f"{paths.rejects.name} is present"):
        return
    digest, lines = hash_file(paths.rejects)
    report.check(
        digest == rejects["sha256"] and lines == rejects["lines"],
        f"{paths.rejects.name}: sha256 {digest[:16]}… and {lines} lines match",
    )
    found, damaged = _recount_rejects(paths.rejects)
    found[WRITTEN] = scanned.lines
    expected = {o: counts.get(o, 0) for o in OUTCOMES}
    recounted = {o: found[o] for o in OUTCOMES}
    report.check(
        not damaged and recounted == expected and sum(recounted.values()) == counts["records"],
        f"counts by outcome, recounted from the files, match: {counts['records']} records = "
        + " + ".join(f"{v} {k}" for k, v in recounted.items() if v)
        + (f" ({paths.rejects.name}: {damaged})" if damaged else "")
        + ("" if recounted == expected else f"; the manifest says {expected}"),
    )


def _recount_rejects(path: Path) -> tuple[Counter[str], str]:
    """The rejects file's entries counted by outcome, and the first damaged line, if any."""
    found: Counter[str] = Counter()
    damaged = ""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                outcome = json.loads(raw).get("outcome") if raw.endswith(b"\n") else None
            except (ValueError, AttributeError):
                outcome = None
            if outcome not in OUTCOMES or outcome == WRITTEN:
                damaged = damaged or f"line {number} is not a reject entry"
                continue
            found[outcome] += 1
    return found, damaged


def _check_export(
    report: Report, export: Path, paths: HandoffPaths, manifest: dict[str, Any]
) -> None:
    if not report.check(export.is_file(), f"export {export} is present"):
        return
    actual = sha256_file(export)
    if not report.check(
        actual == manifest["input"].get("sha256"),
        f"export {export.name}: sha256 {actual[:16]}… matches the manifest's input",
    ):
        return
    try:
        options = MappingOptions.from_dict(manifest["options"])
    except ValueError as exc:
        report.check(False, f"the manifest's options can be used again: {exc}")
        return
    try:
        result, differences = reproduce(str(export), paths, options)
    except InputError as exc:
        report.check(False, f"convert runs again on the export: {exc}")
        return
    recorded = {k: v for k, v in manifest["counts"].items()}
    produced = {"records": result.records, **{o: result.counts[o] for o in OUTCOMES}}
    report.check(
        not differences and produced == recorded,
        "converting the export again with the manifest's options gives byte-identical files"
        if not differences and produced == recorded
        else "converting the export again gives different files: "
        + ("; ".join(d.describe() for d in differences) or f"counts {produced}"),
    )


def _list_signatures(report: Report, manifest: Path, allowed_signers: Path | None) -> None:
    if allowed_signers is not None:
        report.signatures = check_signatures(manifest, allowed_signers)
        report.signatures_checked = True
        return
    folder = approvals_dir(manifest)
    for path in sorted(folder.glob("*.sig")) if folder.is_dir() else []:
        try:
            fingerprint = read_signature(path).fingerprint
            problem = f"not checked (pass {option('allowed_signers', 'FILE')} to check it)"
        except (OSError, ValueError) as exc:
            fingerprint, problem = "", f"unreadable ({exc})"
        report.signatures.append(Checked(path, fingerprint, [], problem))


def _facts(feedback: Path, manifest: dict[str, Any]) -> list[str]:
    """What will be sent, in a few lines an auditor can read."""
    from datetime import datetime, timezone

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

        def iso(t: int) -> str:
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        facts.append(f"updated_at from {iso(min(times))} to {iso(max(times))}")
    return facts
