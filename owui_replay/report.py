"""`report`: one self-contained HTML page of what a handoff sends, for the person who signs.

It runs every check verify runs (the same code: verify(), with the lines counted in the pass
that validates them), then adds what leaves (ratings by value, model, day and rater, free
text, likely personal data, changes against a previous handoff) and what stays (rejects, the
metadata the options keep back). The page names the manifest's sha256, and `approve` points
to the page when it was made for the manifest being signed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from owui_replay._version import __version__
from owui_replay.approvals import approvals_dir
from owui_replay.atomic import sha256_file, write_bytes_atomic
from owui_replay.errors import InputError, UsageError
from owui_replay.feedback_file import FeedbackFile, scan_feedback
from owui_replay.handoff import HandoffPaths
from owui_replay.mapping import MappingOptions
from owui_replay.option_names import option
from owui_replay.report_data import Leaving
from owui_replay.report_diff import Comparer, Comparison
from owui_replay.report_html import MANIFEST_META, FileRow, Page, render
from owui_replay.report_scan import MIN_PARALLEL_BYTES, scan_parallel
from owui_replay.report_stays import Dropped, Rejects, dropped_metadata, read_rejects
from owui_replay.verifying import Report, verify

DEFAULT_ROWS = 500
REPORT_SUFFIX = ".report.html"


def report_path(feedback: str | Path) -> Path:
    """Where the report goes by default: FEEDBACK.report.html beside FEEDBACK.jsonl."""
    feedback = Path(feedback)
    stem = feedback.name[: -len(".jsonl")] if feedback.name.endswith(".jsonl") else feedback.name
    return feedback.with_name(stem + REPORT_SUFFIX)


@dataclass
class ReportResult:
    path: Path
    ok: bool  # every check passed
    manifest_sha256: str | None
    lines: int
    personal_data: int  # likely personal data findings in what leaves
    bytes: int  # size of the page

    def summary(self) -> str:
        verdict = "every check passes" if self.ok else "the handoff does NOT verify"
        return (
            f"report for {self.lines} lines ({verdict}; {self.personal_data} likely personal "
            f"data finding(s)) -> {self.path} ({self.bytes:,} bytes)"
        )


def make_report(
    feedback: str | Path,
    output: str | Path | None = None,
    *,
    export: str | Path | None = None,
    previous: str | Path | None = None,
    allowed_signers: str | Path | None = None,
    accept_other_version: bool = False,
    rows: int = DEFAULT_ROWS,
    command: str = "",
    workers: int = 1,
    min_parallel: int = MIN_PARALLEL_BYTES,
) -> ReportResult:
    """Check FEEDBACK, count what it sends, and write the page (atomically) to OUTPUT.

    With WORKERS > 1 (the command line passes one a core: report_scan.workers_available()),
    a file of MIN_PARALLEL bytes or more is read by that many processes at once, unless
    PREVIOUS is given (its comparison is one ordered pass). The default is the single pass:
    a spawned worker imports the caller's __main__, which runs a script again when its code
    is not under `if __name__ == "__main__":`."""
    feedback = Path(feedback)
    if not feedback.is_file():
        raise InputError(f"{feedback}: no such file")
    paths = HandoffPaths.for_output(feedback)
    target = Path(output) if output is not None else report_path(feedback)
    inputs = [p for p in (feedback, paths.rejects, paths.manifest, export, previous) if p]
    _refuse_overwriting(target, [Path(p) for p in inputs])
    manifest, manifest_sha256 = _read_manifest(paths.manifest)
    options = _options(manifest)
    comparer = Comparer(Path(previous), rows) if previous is not None else None
    try:
        leaving = Leaving(options.up_value, options.down_value, rows)

        def visit(number: int, payload: Any, raw: bytes) -> None:
            leaving.visit(number, payload, raw)
            if comparer is not None:
                comparer.visit(number, payload, raw)

        def scan(path: Path) -> FeedbackFile:
            """Split across the cores when that pays; the single pass otherwise, or when a
            part is not clean (it names the bad line)."""
            nonlocal leaving
            if comparer is None and workers > 1 and path.stat().st_size >= min_parallel:
                split = scan_parallel(path, options.up_value, options.down_value, rows, workers)
                if split is not None:
                    scanned, leaving = split
                    return scanned
            return scan_feedback(path, visit)

        checked = verify(
            feedback,
            export,
            accept_other_version=accept_other_version,
            allowed_signers=allowed_signers,
            facts=False,
            scan=scan,
        )
        if leaving.byte_count != feedback.stat().st_size:  # verify stopped before the last line
            leaving = Leaving(options.up_value, options.down_value, rows)
            if comparer is not None:
                comparer.restart()
            try:
                scan_feedback(feedback, visit)
            except InputError as exc:
                leaving.unreadable = str(exc)
        comparison = comparer.finish(feedback) if comparer is not None else None
    finally:
        if comparer is not None:
            comparer.close()
    leaving.finish()
    rejects = read_rejects(paths.rejects, rows) if paths.rejects.is_file() else None
    dropped = _dropped(export, manifest, checked)
    page = Page(
        feedback=feedback,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        command=command or f"owui-replay report {feedback}",
        tool_version=__version__,
        manifest=manifest,
        manifest_sha256=manifest_sha256,
        files=_files(feedback, paths, export, previous, checked, leaving, manifest),
        verification=checked,
        export_given=export is not None,
        signers_given=allowed_signers is not None,
        leaving=leaving,
        comparison=comparison,
        rejects=rejects,
        dropped=dropped,
        rows=rows,
    )
    data = render(page).encode("utf-8")
    write_bytes_atomic(target, data)
    return ReportResult(
        target, checked.ok and not leaving.unreadable, manifest_sha256, leaving.lines,
        leaving.pii_total(), len(data),
    )  # fmt: skip


def _refuse_overwriting(target: Path, inputs: list[Path]) -> None:
    if target.is_dir():
        raise UsageError(f"-o {target} is a folder; name the page, e.g. -o {target / 'r.html'}")
    for path in inputs:
        if target.exists() and path.exists() and os.path.samefile(target, path):
            raise UsageError(f"-o {target} is the input {path}: choose another name for the page")


def _read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest and the sha256 of its bytes (None, None when absent or unreadable)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    digest = hashlib.sha256(data).hexdigest()
    try:
        manifest = json.loads(data)
    except ValueError:
        return None, digest
    return (manifest if isinstance(manifest, dict) else None), digest


def _options(manifest: dict[str, Any] | None) -> MappingOptions:
    """The options convert used; the defaults when the manifest cannot say (verify fails)."""
    try:
        return MappingOptions.from_dict((manifest or {}).get("options"))  # type: ignore[arg-type]
    except ValueError:
        return MappingOptions()


def _dropped(
    export: str | Path | None, manifest: dict[str, Any] | None, checked: Report
) -> Dropped | None:
    """Count what --keep/--drop-metadata removed: only when the export is the handoff's own."""
    if export is None or manifest is None:
        return None
    options = _options(manifest)
    if not options.keep_metadata and not options.drop_metadata:
        return Dropped()
    if not any(ok and "matches the manifest's input" in text for ok, text in checked.checks):
        return Dropped(error="the export is not the one this handoff was made from")
    return dropped_metadata(Path(export), options)


def _files(
    feedback: Path,
    paths: HandoffPaths,
    export: str | Path | None,
    previous: str | Path | None,
    checked: Report,
    leaving: Leaving,
    manifest: dict[str, Any] | None,
) -> list[FileRow]:
    """Every file of the handoff with its size and sha256 as found now. When every check
    passed, verify has just proved the JSONL's and the rejects' sha256 equal to the
    manifest's: those are not read a third time."""
    proven: dict[Path, str] = {}
    if checked.ok and manifest is not None:
        proven = {
            feedback: manifest["output"]["sha256"],
            paths.rejects: manifest["rejects"]["sha256"],
        }

    def row(role: str, path: Path, note: str = "") -> FileRow:
        if not path.is_file():
            return FileRow(role, path, None, None, "missing")
        digest = proven.get(path) or sha256_file(path)
        return FileRow(role, path, path.stat().st_size, digest, note)

    rows = [
        row("what leaves: one payload a line", feedback, f"{leaving.lines:,} lines"),
        row("what stays: rejected and filtered records", paths.rejects),
        row("manifest: convert's record (what approvals sign)", paths.manifest),
    ]
    if export is not None:
        rows.append(row(f"the export it was made from ({option('export')})", Path(export)))
    if previous is not None:
        rows.append(row(f"the previous handoff ({option('previous')})", Path(previous)))
    rows += [row("approval", s.path) for s in checked.signatures]
    folder = approvals_dir(paths.manifest)
    if not checked.signatures and folder.is_dir():
        rows.append(FileRow("approvals folder", folder, None, None, "no signature in it"))
    return rows


def report_for_manifest(feedback: str | Path) -> tuple[Path, bool] | None:
    """The default report beside FEEDBACK, and whether it was made for the manifest as it is
    now (approve points to it); None when there is none."""
    path = report_path(feedback)
    manifest = HandoffPaths.for_output(Path(feedback)).manifest
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace")
        current = sha256_file(manifest)
    except OSError:
        return None
    marker = f'<meta name="{MANIFEST_META}" content="'
    named = head.split(marker, 1)[1].split('"', 1)[0] if marker in head else ""
    return path, named == current


__all__ = ["DEFAULT_ROWS", "Comparison", "Rejects", "ReportResult", "make_report", "report_path"]
