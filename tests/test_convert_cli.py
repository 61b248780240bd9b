"""The convert command end to end: real files in, real files out, exit codes and messages."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import EDGE_EXPORT, FIXTURES, REAL_EXPORT, read_jsonl, run_cli


def test_convert_accounts_for_every_record(tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    result = run_cli("convert", str(EDGE_EXPORT), "-o", str(out))
    assert result.code == ExitCode.OK
    manifest = json.loads((tmp_path / "feedback.manifest.json").read_text())
    payloads = read_jsonl(out)
    rejects = read_jsonl(tmp_path / "feedback.rejects.jsonl")
    total = len(json.loads(EDGE_EXPORT.read_text()))
    counts = manifest["counts"]
    assert counts["records"] == total == sum(v for k, v in counts.items() if k != "records")
    assert len(payloads) == counts["written"] and len(rejects) == total - counts["written"]
    assert sorted(r["index"] for r in rejects) == sorted({r["index"] for r in rejects})
    assert manifest["output"]["lines"] == len(payloads)
    import hashlib

    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["input"]["sha256"] == hashlib.sha256(EDGE_EXPORT.read_bytes()).hexdigest()
    assert (
        "23 records: 11 written, 4 invalid, 6 skipped, 1 duplicate, 1 superseded" in result.stderr
    )


def test_rejects_keep_the_original_record_and_schema_paths(tmp_path: Path) -> None:
    run_cli("convert", str(EDGE_EXPORT), "-o", str(tmp_path / "f.jsonl"))
    rejects = {r["index"]: r for r in read_jsonl(tmp_path / "f.rejects.jsonl")}
    originals = json.loads(EDGE_EXPORT.read_text())
    assert rejects[11]["errors"] == [
        {"path": "/data/rating", "message": "true matches none of the allowed shapes"}
    ]
    assert rejects[11]["record"] == originals[11]
    assert rejects[4]["reason"] == "not_a_thumb" and rejects[4]["record"] == originals[4]
    superseded = next(r for r in rejects.values() if r["reason"] == "superseded")
    assert superseded["index"] == 18 and superseded["payload"]["value"] == 1


def test_flipped_rating_keeps_only_the_newest_version(tmp_path: Path) -> None:
    run_cli("convert", str(EDGE_EXPORT), "-o", str(tmp_path / "f.jsonl"))
    flipped = [
        p for p in read_jsonl(tmp_path / "f.jsonl")
        if p["metadata"]["feedback_id"].startswith("e0000019")
    ]  # fmt: skip
    assert [(p["value"], p["metadata"]["updated_at"]) for p in flipped] == [(-1, "1795417950")]


def test_dry_run_writes_nothing_and_prints_samples(tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    result = run_cli("convert", str(REAL_EXPORT), "-o", str(out), "--dry-run", "--samples", "2")
    assert result.code == 0
    assert list(tmp_path.iterdir()) == []
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(result.stdout)
    second, _ = decoder.raw_decode(result.stdout[end:].lstrip())
    assert first["value"] in (1, -1) and second["trace_id"]
    assert "dry run: 9 records: 8 to write, 1 skipped" in result.stderr


def test_since_and_until_accept_iso_dates_and_epochs(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    result = run_cli(
        "convert", str(REAL_EXPORT), "-o", str(out), "--since", "1795417830",
        "--until", "2026-11-23T07:10:34Z",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    kept = {int(p["metadata"]["updated_at"]) for p in read_jsonl(out)}
    assert kept and all(1795417830 <= t < 1795417834 for t in kept)
    filtered = [r for r in read_jsonl(tmp_path / "f.rejects.jsonl") if r["outcome"] == "filtered"]
    assert filtered and all("record" not in r for r in filtered)


def test_metadata_options(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    result = run_cli(
        "convert", str(REAL_EXPORT), "-o", str(out), "--drop-comments",
        "--drop-metadata", "base_models.*", "--metadata", "_environment=prod",
        "--thumbs-down-value", "0", "--weight", "0.5",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    payloads = read_jsonl(out)
    assert all("comment" not in p["metadata"] for p in payloads)
    assert all(p["metadata"]["_environment"] == "prod" for p in payloads)
    assert {p["value"] for p in payloads} == {0, 1} and {p["weight"] for p in payloads} == {0.5}
    manifest = json.loads((tmp_path / "f.manifest.json").read_text())
    assert manifest["options"]["drop_metadata"] == ["base_models.*", "comment"]


def test_missing_ids_fallback_is_opt_in(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    assert (
        run_cli("convert", str(REAL_EXPORT), "-o", str(out), "--missing-ids", "feedback-id").code
        == 0
    )
    assert len(read_jsonl(out)) == 9


def test_gzip_input(tmp_path: Path) -> None:
    gz = tmp_path / "export.json.gz"
    gz.write_bytes(gzip.compress(REAL_EXPORT.read_bytes()))
    assert run_cli("convert", str(gz), "-o", str(tmp_path / "f.jsonl")).code == 0
    assert len(read_jsonl(tmp_path / "f.jsonl")) == 8


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["convert", "x.json"], "-o/--output is required"),
        (["convert", "x.json", "-o", "y", "--trace-id", "{bogus}"], "unknown field {bogus}"),
        (["convert", "x.json", "-o", "y", "--thumbs-down-value", "-11"], "outside -10..10"),
        (["convert", "x.json", "-o", "y", "--weight", "3"], "outside 0..1"),
        (["convert", "x.json", "-o", "y", "--since", "last tuesday"], "neither epoch seconds"),
        (["convert", "x.json", "-o", "y", "--since", "1795417826000"], "milliseconds"),
        (["convert", "x.json", "-o", "y", "--since", "20", "--until", "10"], "earlier than"),
        (["convert", "x.json", "-o", "y", "--metadata", "novalue"], "KEY=VALUE"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], needle: str) -> None:
    result = run_cli(*argv)
    assert result.code == ExitCode.USAGE
    assert needle in result.stderr and result.stderr.count("\n") == 1


def test_empty_export_is_not_success(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "f.jsonl"
    result = run_cli("convert", str(empty), "-o", str(out))
    assert result.code == ExitCode.BAD_INPUT and "empty array" in result.stderr
    assert list(tmp_path.iterdir()) == [empty]
    assert run_cli("convert", str(empty), "-o", str(out), "--allow-empty").code == 0
    assert out.read_bytes() == b""


def test_past_the_end_page_is_explained(tmp_path: Path) -> None:
    page = FIXTURES / "openwebui-0.12.4" / "user-page-empty.json"
    result = run_cli("convert", str(page), "-o", str(tmp_path / "f.jsonl"))
    assert result.code == ExitCode.BAD_INPUT
    assert "no items although its total is 9 (a page past the end?)" in result.stderr


BROKEN = {
    "truncated": lambda good: good[: len(good) - 500],
    "invalid-utf8": lambda good: good.replace(b"Clear and correct", b"Clear \xff correct", 1),
    "nan": lambda good: good.replace(b'"version": 0', b'"version": NaN', 3),
    "huge-integer": lambda good: good.replace(b'"version": 0', b'"version": 9' + b"9" * 400, 3),
    "trailing-garbage": lambda good: good + b"\n{}",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_fails_cleanly_from_the_real_entry_point(tmp_path: Path, case: str) -> None:
    export = tmp_path / "export.json"
    good = json.dumps(json.loads(REAL_EXPORT.read_text()), indent=1).encode()
    export.write_bytes(BROKEN[case](good))
    out = tmp_path / "feedback.jsonl"
    out.write_text("previous good output\n")
    done = subprocess.run(
        [sys.executable, "-m", "owui_replay", "convert", str(export), "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.BAD_INPUT
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(export) in lines[0] and "byte offset" in lines[0] and "record index" in lines[0]
    assert out.read_text() == "previous good output\n"  # the final name is untouched
    assert not (tmp_path / "feedback.manifest.json").exists()
    partial = tmp_path / "feedback.jsonl.partial"
    index = int(lines[0].split("record index ")[1].split()[0])
    if partial.exists():  # the records written before the break are kept and named
        assert str(partial) in lines[0]
        assert 0 < len(read_jsonl(partial)) <= index
    else:  # none were: nothing is left behind, and nothing is named
        assert ".partial" not in lines[0]
    if case != "trailing-garbage":
        assert index < 9


def test_traceback_only_when_asked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[{]")
    args = ["convert", str(bad), "-o", str(tmp_path / "f.jsonl")]
    assert "Traceback" not in run_cli(*args).stderr
    assert "Traceback" in run_cli("--traceback", *args).stderr


def test_stdin_via_the_console_script(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "owui_replay", "convert", "-", "-o", str(out), "--quiet"],
        input=REAL_EXPORT.read_bytes(), capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == b""
    assert len(read_jsonl(out)) == 8
    manifest = json.loads((tmp_path / "f.manifest.json").read_text())
    assert manifest["input"]["name"] == "<stdin>"


def test_unicode_line_separators_never_split_a_jsonl_line(tmp_path: Path) -> None:
    records = json.loads(REAL_EXPORT.read_text())
    records[6]["data"]["comment"] = "one\u2028two\u2029three\x85four"
    export = tmp_path / "export.json"
    export.write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    assert run_cli("convert", str(export), "-o", str(tmp_path / "f.jsonl")).code == 0
    for name in ("f.jsonl", "f.rejects.jsonl"):
        text = (tmp_path / name).read_text("utf-8")
        assert text.splitlines() == text.split("\n")[:-1]
    comments = [p["metadata"].get("comment") for p in read_jsonl(tmp_path / "f.jsonl")]
    assert "one\u2028two\u2029three\x85four" in comments


def test_an_unwritable_output_is_one_line_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("convert", str(REAL_EXPORT), "-o", str(blocker / "out.jsonl"))
    assert result.code == ExitCode.ERROR
    assert result.stderr.startswith(f"owui-replay: error: {blocker}")
    assert result.stderr.count("\n") == 1 and "unexpected" not in result.stderr
