"""report: the page's content, counts and limits, read from the HTML it writes (the browser
tests in test_report_browser.py check how Chromium renders it)."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from owui_replay.atomic import sha256_file
from owui_replay.errors import ExitCode
from owui_replay.report_pii import find
from tests.helpers import EDGE_EXPORT, REAL_EXPORT, read_jsonl, run_cli


def handoff(folder: Path, export: Path = REAL_EXPORT, *options: str) -> Path:
    feedback = folder / "feedback.jsonl"
    result = run_cli("convert", str(export), "-o", str(feedback), "-q", *options)
    assert result.code == 0, result.stderr
    return feedback


def write_export(folder: Path, records: list[dict[str, Any]], name: str = "export.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    return path


def real_records() -> list[dict[str, Any]]:
    return json.loads(REAL_EXPORT.read_text("utf-8"))


def cell(page: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}">([^<]*)<', page)
    assert found, element_id
    return html.unescape(found.group(1))


def report(feedback: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("report", str(feedback), *args)
    page = feedback.with_name("feedback.report.html")
    if "-o" in args:
        page = Path(args[args.index("-o") + 1])
    return result.code, page.read_text("utf-8") if page.exists() else "", result.stderr


def test_a_fresh_handoff_reports_beside_it_naming_its_manifest(tmp_path: Path) -> None:
    feedback = handoff(tmp_path)
    code, page, stderr = report(feedback, "--export", str(REAL_EXPORT))
    assert code == ExitCode.OK, stderr
    assert "feedback.report.html" in stderr and "every check passes" in stderr
    manifest = feedback.with_name("feedback.manifest.json")
    sha = sha256_file(manifest)
    assert f'<meta name="owui-replay-manifest-sha256" content="{sha}">' in page
    assert cell(page, "manifest-sha256") == sha
    counts = json.loads(manifest.read_text("utf-8"))["counts"]
    for outcome, count in counts.items():
        assert cell(page, f"m-{outcome}") == cell(page, f"f-{outcome}") == f"{count:,}"
    assert (
        "converting the export again with the manifest&#x27;s options gives byte-identical" in page
    )


def test_the_page_loads_nothing_and_runs_nothing(tmp_path: Path) -> None:
    _code, page, _err = report(handoff(tmp_path))
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp and "default-src &#x27;none&#x27;" in csp.group(1)
    assert "script-src &#x27;none&#x27;" in csp.group(1)
    assert "<script" not in page.lower() and " style=" not in page
    assert not re.search(r'\s(?:src|href|xlink:href)\s*=\s*"(?!#)', page)  # only in-page anchors
    assert "@import" not in page and "url(http" not in page


def test_every_value_model_day_rater_and_key_is_counted(tmp_path: Path) -> None:
    feedback = handoff(tmp_path)
    _code, page, _err = report(feedback)
    lines = read_jsonl(feedback)
    assert cell(page, "value-1") == str(sum(p["value"] == 1 for p in lines))
    assert cell(page, "value--1") == str(sum(p["value"] == -1 for p in lines))
    # the model table: my-model-config 4 up, 1 down; qwen-helper 1 up, 2 down
    assert re.search(r"<td>my-model-config</td><td class=n>4</td><td class=n>1</td>", page)
    assert re.search(r"<td>qwen-helper</td><td class=n>1</td><td class=n>2</td>", page)
    assert "<td>2026-11-23</td><td class=n>5</td><td class=n>3</td>" in page
    assert "2 rater(s)" in page
    assert '<span class="mono">comment</span></td><td class=n><span data-key-lines>4</span>' in page
    texts = [k for p in lines for k in p["metadata"] if k in ("comment", "reason", "tags")]
    with_text = sum(any(k in ("comment", "reason", "tags") for k in p["metadata"]) for p in lines)
    assert f"{len(texts)} value(s) in {with_text} line(s)" in page


def test_likely_personal_data_is_marked_and_counted(tmp_path: Path) -> None:
    records = real_records()
    records[6]["data"]["comment"] = "mail me at jane.doe@example.org or +44 20 7946 0958"
    records[5]["data"]["comment"] = (
        "see https://intranet.example/x?id=7 token sk-abcdefghijklmnop1234"
    )
    feedback = handoff(tmp_path, write_export(tmp_path, records))
    code, page, stderr = report(feedback)
    assert code == ExitCode.OK and "4 likely personal data finding(s)" in stderr
    assert cell(page, "glance-pii") == "4"
    for kind in ("e-mail", "phone", "url", "key-like"):
        assert cell(page, f"pii-{kind}") == "1", kind
    assert cell(page, "pii-ip") == "0"
    assert '<mark title="e-mail">jane.doe@example.org</mark>' in page
    assert '<mark title="key-like">sk-abcdefghijklmnop1234</mark>' in page


def test_long_tables_list_the_first_rows_and_state_the_total(tmp_path: Path) -> None:
    _code, page, _err = report(handoff(tmp_path), "--rows", "2")
    assert "The first 2 of 15 free-text values</b> are listed" in page
    assert page.count("<tr><td class=n>") >= 2
    rows = re.search(r'<table class="free-text">.*?</table>', page, re.S)
    assert rows and rows.group(0).count("<tr>") == 3  # the header and two rows


def test_a_failed_check_still_writes_the_page_and_exits_6(tmp_path: Path) -> None:
    feedback = handoff(tmp_path)
    lines = feedback.read_text("utf-8").splitlines(keepends=True)
    payload = json.loads(lines[0])
    payload["value"] = -payload["value"]
    lines[0] = json.dumps(payload) + "\n"
    feedback.write_text("".join(lines), "utf-8")
    code, page, stderr = report(feedback)
    assert code == ExitCode.MISMATCH and "the handoff does NOT verify" in stderr
    assert 'class="verdict bad"' in page and "do not approve this handoff" in page
    assert '<span class="fail">FAIL</span>' in page


def test_a_handoff_without_manifest_is_still_counted(tmp_path: Path) -> None:
    feedback = handoff(tmp_path)
    feedback.with_name("feedback.manifest.json").unlink()
    code, page, _err = report(feedback)
    assert code == ExitCode.MISMATCH
    assert cell(page, "glance-lines") == "8" and cell(page, "f-written") == "8"
    assert cell(page, "manifest-sha256") == "no manifest"


def test_an_invalid_line_is_named_and_the_lines_before_it_counted(tmp_path: Path) -> None:
    feedback = handoff(tmp_path)
    with open(feedback, "a") as handle:
        handle.write('{"trace_id": "t", "value": 99}\n')
    code, page, _err = report(feedback)
    assert code == ExitCode.MISMATCH
    assert "The lines could not all be read" in page and "line 9" in page
    assert cell(page, "glance-lines") == "8"


def test_previous_handoff_shows_new_changed_and_removed(tmp_path: Path) -> None:
    week1 = tmp_path / "week1"
    week2 = tmp_path / "week2"
    week1.mkdir()
    week2.mkdir()
    records = real_records()
    old = handoff(week1, write_export(week1, records))
    flipped = copy.deepcopy(records[6])
    flipped["data"]["rating"] = -1
    flipped["updated_at"] += 60
    added = copy.deepcopy(records[5])
    added["id"] = str(uuid.UUID(int=99))
    newer = [r for i, r in enumerate(records) if i not in (6, 8)] + [flipped, added]
    new = handoff(week2, write_export(week2, newer))
    code, page, stderr = report(new, "--previous", str(old))
    assert code == ExitCode.OK, stderr
    assert (cell(page, "prev-new"), cell(page, "prev-changed"), cell(page, "prev-removed")) == (
        "1", "1", "1",
    )  # fmt: skip
    assert records[6]["id"] in page and records[8]["id"] in page
    assert "<td>+1</td><td>-1</td><td>value, metadata.rating, metadata.updated_at</td>" in page


def test_withdrawals_are_listed(tmp_path: Path) -> None:
    records = real_records()
    records[3]["data"]["withdrawn"] = True
    feedback = handoff(tmp_path, write_export(tmp_path, records))
    _code, page, _err = report(feedback)
    assert "1 line(s) withdraw a rating." in page and records[3]["id"] in page
    _code, plain, _err = report(handoff(tmp_path / "plain"))
    assert "None: no line is marked withdrawn." in plain


def test_rejects_by_reason_match_the_manifest(tmp_path: Path) -> None:
    feedback = handoff(tmp_path, EDGE_EXPORT)
    _code, page, _err = report(feedback)
    manifest = json.loads(feedback.with_name("feedback.manifest.json").read_text("utf-8"))
    for reason, count in manifest["reasons"].items():
        assert re.search(
            rf'<span class="mono">{reason}</span></td><td>\w+</td><td class=n>{count}</td>', page
        ), reason


def test_metadata_kept_back_is_counted_with_the_export(tmp_path: Path) -> None:
    feedback = handoff(tmp_path, REAL_EXPORT, "--drop-comments", "--drop-metadata", "base_models.*")
    _code, without, _err = report(feedback)
    assert "Pass --export to count the keys these options removed" in without
    code, page, stderr = report(feedback, "--export", str(REAL_EXPORT))
    assert code == ExitCode.OK, stderr
    dropped = re.search(r'<table class="dropped">.*?</table>', page, re.S)
    assert dropped
    unfiltered = read_jsonl(handoff(tmp_path / "all"))
    for key in ("comment", "base_models.my-model-config", "base_models.qwen-helper"):
        carried = sum(key in p["metadata"] for p in unfiltered)
        assert f'<span class="mono">{key}</span></td><td class=n>{carried}</td>' in dropped.group(0)
    assert dropped.group(0).count("<tr>") == 4  # the header and the three keys
    assert "comment" not in {k for p in read_jsonl(feedback) for k in p["metadata"]}


def test_approve_points_to_the_report_made_for_its_manifest(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        raise RuntimeError("this test needs ssh-keygen (apt-get install openssh-client)")
    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    feedback = handoff(tmp_path)
    quiet = run_cli("approve", str(feedback), "--key", str(key))
    assert quiet.code == 0 and "report:" not in quiet.stdout
    assert report(feedback)[0] == ExitCode.OK
    signed = run_cli("approve", str(feedback), "--key", str(key))
    page = feedback.with_name("feedback.report.html")
    assert f"report: {page} (made for this manifest)" in signed.stdout
    handoff(tmp_path, REAL_EXPORT, "--weight", "0.5")  # another manifest, same names
    stale = run_cli("approve", str(feedback), "--key", str(key))
    assert f"report: {page} was made for another manifest" in stale.stdout
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.com {key.with_suffix('.pub').read_text()}")
    _code, shown, _err = report(feedback, "--allowed-signers", str(allowed))
    assert "valid</span> for alice@example.com" in shown


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    missing = run_cli("report", str(tmp_path / "nope.jsonl"))
    assert missing.code == ExitCode.BAD_INPUT
    assert missing.stderr == f"owui-replay: error: {tmp_path / 'nope.jsonl'}: no such file\n"
    feedback = handoff(tmp_path)
    itself = run_cli("report", str(feedback), "-o", str(feedback))
    assert itself.code == ExitCode.USAGE and "is the input" in itself.stderr
    assert len(read_jsonl(feedback)) == 8
    previous = tmp_path / "old.jsonl"
    previous.write_text('{"trace_id": "t", "value": 1}\nnot json\n', "utf-8")
    bad = run_cli("report", str(feedback), "--previous", str(previous))
    assert bad.code == ExitCode.BAD_INPUT and bad.stderr.count("\n") == 1
    assert f"{previous}: line 2: not JSON" in bad.stderr
    assert not feedback.with_name("feedback.report.html").exists()


def test_a_bad_previous_file_leaves_no_temporary_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from owui_replay.errors import InputError
    from owui_replay.report_diff import Comparer

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where Comparer makes its folder
    previous = tmp_path / "old.jsonl"
    previous.write_text('{"trace_id": "t", "value": 1}\nnot json\n', "utf-8")
    with pytest.raises(InputError, match="line 2: not JSON") as caught:
        Comparer(previous, 10)
    assert caught.value is not None  # the traceback (and any half-made Comparer) is still alive
    assert list(scratch.iterdir()) == []  # released by the constructor, not by the collector


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("write to a.b-c@mail.example.co.uk today", ["e-mail"]),
        ("+1 (555) 010-9999 or 030 1234 5678", ["phone", "phone"]),
        ("http://x.example/p and www.example.org", ["URL", "URL"]),
        ("from 10.0.0.12", ["IP address"]),
        ("AKIAABCDEFGHIJKLMNOP and ghp_0123456789abcdefghijABCDEFGHIJ", ["key-like", "key-like"]),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", ["key-like"]),
        ("0d4fbf33-dde5-4076-91d6-8b55b87f85ac on 2026-11-01 costs 3.50", []),
        ("/models/Qwen2.5-14B-Instruct dont_like_the_style Technology,Programming", []),
    ],
)
def test_personal_data_patterns(text: str, kinds: list[str]) -> None:
    assert [kind for _s, _e, kind in find(text)] == kinds


def test_invisible_and_direction_changing_characters_are_shown(tmp_path: Path) -> None:
    records = real_records()
    records[6]["data"]["comment"] = "fine\u202e}tpircs{ and a zero\u200bwidth space"
    _code, page, _err = report(handoff(tmp_path, write_export(tmp_path, records)))
    assert "fine⟨U+202E⟩}tpircs{ and a zero⟨U+200B⟩width space" in page
    assert "\u202e" not in page and "\u200b" not in page


def test_a_stray_or_odd_time_neither_stops_the_report_nor_swells_the_page(
    tmp_path: Path,
) -> None:
    """updated_at is any string of up to 128 characters: '²' is a digit int() refuses, 40
    nines overflow a date, and one time in the year 5138 once made an 8 MB page of months."""
    line = '{"metadata":{"updated_at":"%s","feedback_id":"f%d"},"trace_id":"t","value":1}\n'
    times = ["²", "9" * 40, "99999999999", "1795000000", "١٧٩٥٠٠٠٠٠٠"]
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("".join(line % (t, i) for i, t in enumerate(times)), "utf-8")
    code, page, stderr = report(feedback)
    assert code == ExitCode.MISMATCH, stderr  # no manifest: the page is written all the same
    assert len(page) < 100_000
    assert "By century" in page and "2000-2099" in page and "5100-5199" in page
    assert "no date" in page and cell(page, "glance-lines") == "5"
