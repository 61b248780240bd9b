"""verify (the auditor's check) and inspect (what is in an export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import EDGE_EXPORT, FIXTURES, REAL_EXPORT, run_cli


def handoff(tmp_path: Path, export: Path = EDGE_EXPORT) -> Path:
    out = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(export), "-o", str(out), "-q").code == 0
    return out


def test_a_fresh_handoff_verifies(tmp_path: Path) -> None:
    result = run_cli("verify", str(handoff(tmp_path)), "--export", str(EDGE_EXPORT))
    assert result.code == 0, result.stdout
    assert "FAIL" not in result.stdout and result.stdout.endswith("handoff verified\n")
    assert "counts by outcome, recounted from the files, match: 23 records" in result.stdout
    assert "gives byte-identical files" in result.stdout
    assert "values: -1 x3, +1 x8" in result.stdout


def test_the_golden_handoff_verifies_in_place() -> None:
    result = run_cli("verify", str(FIXTURES / "openwebui-0.12.4" / "expected" / "feedback.jsonl"))
    assert result.code == 0, result.stdout


def test_an_edited_line_fails(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    lines = out.read_text("utf-8").splitlines(keepends=True)
    payload = json.loads(lines[0])
    payload["value"] = -payload["value"]  # still a valid payload, but not what was reviewed
    lines[0] = json.dumps(payload, ensure_ascii=False) + "\n"
    out.write_text("".join(lines), "utf-8")
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH
    assert "FAIL  feedback.jsonl: sha256" in result.stdout
    assert result.stdout.endswith("handoff does NOT match its manifest\n")


def test_an_invalid_line_fails(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    with open(out, "a") as handle:
        handle.write('{"trace_id": "t", "value": 99}\n')
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH and "FAIL  every line is a Portkey" in result.stdout


def test_edited_rejects_fail(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    rejects = tmp_path / "feedback.rejects.jsonl"
    rejects.write_text("".join(rejects.read_text("utf-8").splitlines(keepends=True)[1:]), "utf-8")
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH and "FAIL  feedback.rejects.jsonl" in result.stdout


def test_a_missing_manifest_or_wrong_export_fails(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    wrong = run_cli("verify", str(out), "--export", str(REAL_EXPORT))
    assert wrong.code == ExitCode.MISMATCH and "FAIL  export export.json" in wrong.stdout
    (tmp_path / "feedback.manifest.json").unlink()
    missing = run_cli("verify", str(out))
    assert missing.code == ExitCode.MISMATCH and "FAIL  manifest" in missing.stdout


def rewrite_manifest(out: Path, change) -> None:
    path = out.with_name("feedback.manifest.json")
    manifest = json.loads(path.read_text("utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2), "utf-8")


def test_a_flipped_value_with_an_updated_hash_fails_reproduction_and_names_the_line(
    tmp_path: Path,
) -> None:
    from owui_replay.atomic import hash_file

    out = handoff(tmp_path)
    lines = out.read_bytes().splitlines(keepends=True)
    payload = json.loads(lines[4])
    payload["value"] = -payload["value"]
    lines[4] = (json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                + "\n").encode()  # fmt: skip
    out.write_bytes(b"".join(lines))
    digest, count = hash_file(out)

    def forge(manifest: dict) -> None:
        manifest["output"]["sha256"], manifest["output"]["lines"] = digest, count

    rewrite_manifest(out, forge)
    assert run_cli("verify", str(out)).code == ExitCode.OK  # consistent with itself...
    result = run_cli("verify", str(out), "--export", str(EDGE_EXPORT))
    assert result.code == ExitCode.MISMATCH  # ...but not what convert makes of the export
    (line,) = [x for x in result.stdout.splitlines() if "converting the export again" in x]
    assert line.startswith("FAIL") and "feedback.jsonl line 5 differs" in line
    assert f'"value":{payload["value"]}' in line


def test_relabelled_outcomes_with_the_same_total_fail(tmp_path: Path) -> None:
    out = handoff(tmp_path)

    def relabel(manifest: dict) -> None:
        assert manifest["counts"]["skipped"] > 0
        manifest["counts"]["skipped"] -= 1
        manifest["counts"]["invalid"] += 1

    rewrite_manifest(out, relabel)
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH
    assert "FAIL  counts by outcome, recounted from the files" in result.stdout


def test_rejects_edited_in_place_with_the_same_line_count_fail(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    rejects = tmp_path / "feedback.rejects.jsonl"
    text = rejects.read_text("utf-8")
    rejects.write_text(text.replace('"outcome":"skipped"', '"outcome":"invalid"', 1), "utf-8")
    assert len(rejects.read_text().splitlines()) == len(text.splitlines())
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH and "FAIL  feedback.rejects.jsonl: sha256" in (
        result.stdout
    )


@pytest.mark.parametrize(
    "damage",
    [lambda m: m["counts"].__setitem__("written", "8"),
     lambda m: m.__setitem__("output", None),
     lambda m: m["counts"].__setitem__("exported", 1),
     lambda m: m.__setitem__("options", []),
     lambda m: m.clear()],
    ids=["count-as-string", "output-null", "unknown-outcome", "options-list", "empty"],
)  # fmt: skip
def test_a_malformed_manifest_is_a_fail_line_not_a_crash(tmp_path: Path, damage) -> None:
    out = handoff(tmp_path)
    rewrite_manifest(out, damage)
    result = run_cli("verify", str(out), "--export", str(EDGE_EXPORT))
    assert result.code == ExitCode.MISMATCH, result.stderr
    assert "FAIL  manifest is well-formed" in result.stdout and not result.stderr


def test_a_missing_export_is_a_fail_line(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    result = run_cli("verify", str(out), "--export", str(tmp_path / "nope.json"))
    assert result.code == ExitCode.MISMATCH and "FAIL  export" in result.stdout
    assert not result.stderr


def test_a_manifest_from_another_version_fails_unless_accepted(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    rewrite_manifest(out, lambda m: m["tool"].__setitem__("version", "0.0.9"))
    refused = run_cli("verify", str(out), "--export", str(EDGE_EXPORT))
    assert refused.code == ExitCode.MISMATCH
    assert "FAIL  made by owui-replay 0.0.9" in refused.stdout
    assert "--accept-other-version" in refused.stdout
    accepted = run_cli("verify", str(out), "--export", str(EDGE_EXPORT), "--accept-other-version")
    assert accepted.code == ExitCode.OK, accepted.stdout


@pytest.mark.parametrize("fmt", [3, 0, "1", None])
def test_a_manifest_format_this_version_does_not_read_is_refused_by_number(
    tmp_path: Path, fmt: object
) -> None:
    out = handoff(tmp_path)
    rewrite_manifest(out, lambda m: m.__setitem__("manifest_version", fmt))
    refused = run_cli("verify", str(out), "--accept-other-version")
    assert refused.code == ExitCode.MISMATCH
    assert "FAIL  manifest is well-formed" in refused.stdout
    assert "this owui-replay reads formats 1 to 2" in refused.stdout


def test_a_handoff_with_superseded_ratings_reproduces(tmp_path: Path) -> None:
    records = json.loads(REAL_EXPORT.read_text())
    changed = json.loads(json.dumps(next(r for r in records if r.get("snapshot"))))
    changed["data"]["rating"] = -int(changed["data"]["rating"])
    changed["updated_at"] += 5
    export = tmp_path / "export.json"
    export.write_text(json.dumps([*records, changed]))
    out = handoff(tmp_path, export)
    manifest = json.loads((tmp_path / "feedback.manifest.json").read_text())
    assert manifest["counts"]["superseded"] == 1
    result = run_cli("verify", str(out), "--export", str(export))
    assert result.code == ExitCode.OK, result.stdout


def test_inspect_counts_what_is_there() -> None:
    result = run_cli("inspect", str(EDGE_EXPORT), "--json")
    assert result.code == 0
    stats = json.loads(result.stdout)
    assert stats["records"] == 23 and stats["invalid"] == 4 and stats["arena"] == 1
    assert stats["ratings"] == {"+1": 11, "-1": 4, "missing": 2, "0": 1, "+7": 1}
    assert stats["types"] == {"rating": 18, "arena_vote": 1}
    assert sum(stats["users"].values()) == sum(stats["days"].values()) == 19
    assert stats["updated_at"] == {"first": 1795417826, "last": 1795417950}


def test_inspect_table_on_the_real_export() -> None:
    result = run_cli("inspect", str(REAL_EXPORT), "--top", "2")
    assert result.code == 0
    assert result.stdout.startswith("records 9   invalid 0   arena 1\n")
    assert "reasons (" in result.stdout and "… " in result.stdout


def test_inspect_reads_gzip_and_refuses_broken_files(tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "e.json.gz"
    gz.write_bytes(gzip.compress(REAL_EXPORT.read_bytes()))
    assert json.loads(run_cli("inspect", str(gz), "--json").stdout)["records"] == 9
    broken = tmp_path / "b.json"
    shutil.copyfile(REAL_EXPORT, broken)
    broken.write_bytes(broken.read_bytes()[:-300])
    result = run_cli("inspect", str(broken))
    assert result.code == ExitCode.BAD_INPUT and "byte offset" in result.stderr


# Gaps found by mutation testing (dev/mutate.py owui_replay/verifying.py ...).


def test_the_manifest_s_own_options_are_used_to_reproduce(tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(EDGE_EXPORT), "-o", str(out), "-q", "--thumbs-down-value", "0",
                   "--trace-id", "{feedback_id}").code == 0  # fmt: skip
    result = run_cli("verify", str(out), "--export", str(EDGE_EXPORT))
    assert result.code == ExitCode.OK, result.stdout
    assert "ok    converting the export again with the manifest's options gives byte-identical" in (
        result.stdout
    )


def test_options_that_cannot_be_used_again_fail(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    rewrite_manifest(out, lambda m: m["options"].__setitem__("weight", "heavy"))
    result = run_cli("verify", str(out), "--export", str(EDGE_EXPORT))
    assert result.code == ExitCode.MISMATCH
    assert "FAIL  the manifest's options can be used again: options are malformed" in result.stdout


def test_a_manifest_that_is_not_json_is_a_fail_line(tmp_path: Path) -> None:
    out = handoff(tmp_path)
    (tmp_path / "feedback.manifest.json").write_text("{not json", "utf-8")
    result = run_cli("verify", str(out), "--json")
    assert result.code == ExitCode.MISMATCH and not result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert checks[-1]["ok"] is False and checks[-1]["text"].startswith(
        "manifest is readable JSON ("
    )
    assert all(set(check) == {"ok", "text"} for check in checks)


@pytest.mark.parametrize(
    ("damage", "named"),
    [(lambda lines: lines.insert(1, b"not json\n"), "line 2 is not a reject entry"),
     (lambda lines: lines.insert(0, b'{"outcome": "written"}\n'), "line 1 is not a reject entry"),
     (lambda lines: lines.__setitem__(-1, lines[-1].rstrip(b"\n")),
      "line {last} is not a reject entry")],
    ids=["not-json", "a-written-outcome", "last-line-cut"],
)  # fmt: skip
def test_damaged_rejects_lines_are_named(tmp_path: Path, damage, named: str) -> None:
    out = handoff(tmp_path)
    rejects = tmp_path / "feedback.rejects.jsonl"
    lines = rejects.read_bytes().splitlines(keepends=True)
    damage(lines)
    rejects.write_bytes(b"".join(lines))
    result = run_cli("verify", str(out))
    assert result.code == ExitCode.MISMATCH
    assert f"(feedback.rejects.jsonl: {named.format(last=len(lines))})" in result.stdout
    assert "FAIL  counts by outcome, recounted from the files, match" in result.stdout
    # the entries around an inserted line are all still counted: the recount itself agrees
    assert ("; the manifest says" in result.stdout) == (named.startswith("line {last}"))
