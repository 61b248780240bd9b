"""The report in a real headless Chromium with the network off: nothing requested, nothing
logged, the manifest's numbers on the page, a page that is not blank, and user text that
stays text (an XSS corpus in comments, tags, reasons, model names, keys and file names)."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owui_replay.atomic import sha256_file
from tests.browser import Browser
from tests.helpers import REAL_EXPORT, read_jsonl, run_cli

XSS = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=2>",
    '"><svg onload=window.__xss=3>',
    "'><iframe src=javascript:window.__xss=4></iframe>",
    "</td></tr></table></textarea></title></style><script>window.__xss=5</script>",
    '<a href="javascript:window.__xss=6">click</a>',
    "<style>body{display:none}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=7>",
    "&lt;b&gt;already escaped&lt;/b&gt; &amp; <b>bold</b>",
    "<!-- x --><base href=http://evil.example/>",
    "<link rel=stylesheet href=http://evil.example/x.css>",
    "<meta http-equiv=refresh content=0;url=http://evil.example/>",
    "{{constructor.constructor('window.__xss=8')()}} ${window.__xss=9}",
    "\u202e<script>window.__xss=10</script> mail x@evil.example",
]
HOSTILE_NAME = "<img src=x onerror=window.__xss=11>.jsonl"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = Browser()  # one browser for every test here: starting it is the slow part
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("real")
    feedback = folder / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(feedback), "-q").code == 0
    page = folder / "feedback.report.html"
    result = run_cli("report", str(feedback), "--export", str(REAL_EXPORT))
    assert result.code == 0, result.stderr
    return feedback, page


def xss_export(folder: Path) -> Path:
    """The real export plus one record per corpus entry, the entry as its comment; a few also
    carry it in tags, reason and model id."""
    records = json.loads(REAL_EXPORT.read_text("utf-8"))
    template = records[6]
    for number, text in enumerate(XSS):
        record = copy.deepcopy(template)
        record["id"] = str(uuid.UUID(int=number + 1))
        record["data"]["comment"] = text
        if number == 1:
            record["data"]["tags"] = [XSS[0], XSS[2]]
        if number == 2:
            record["data"]["reason"] = XSS[1]
        if number == 3:
            record["data"]["model_id"] = XSS[3]
        records.append(record)
    path = folder / "xss-export.json"
    path.write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    return path


def test_the_report_renders_offline_with_the_manifests_numbers(
    browser: Browser, real_report: tuple[Path, Path]
) -> None:
    feedback, page = real_report
    manifest = json.loads(feedback.with_name("feedback.manifest.json").read_text("utf-8"))
    url = browser.open(page)
    assert browser.requests() == [url]  # the page itself, nothing else was even attempted
    assert browser.problems() == []
    text = browser.evaluate
    for outcome, count in manifest["counts"].items():
        assert text(f"document.getElementById('m-{outcome}').textContent") == f"{count:,}"
        assert text(f"document.getElementById('f-{outcome}').textContent") == f"{count:,}"
    assert text("document.getElementById('glance-lines').textContent") == str(
        manifest["output"]["lines"]
    )
    sha = sha256_file(feedback.with_name("feedback.manifest.json"))
    assert text("document.getElementById('manifest-sha256').textContent") == sha
    values = Counter(p["value"] for p in read_jsonl(feedback))
    for value, count in values.items():
        assert text(f"document.getElementById('value-{value}').textContent") == str(count)
    assert text("document.getElementById('verdict').textContent") == "All 11 checks pass."
    checks = text("[...document.querySelectorAll('#checks + table tbody tr')].length")
    assert checks == 11
    comments = [
        p["metadata"]["comment"] for p in read_jsonl(feedback) if "comment" in p["metadata"]
    ]
    shown = text(
        "[...document.querySelectorAll('table.free-text tbody tr')]"
        ".filter(r => r.cells[2].textContent === 'comment').map(r => r.cells[3].textContent)"
    )
    assert shown == comments and len(comments) == 4


def test_the_page_is_not_blank_and_prints(browser: Browser, real_report: tuple[Path, Path]) -> None:
    _feedback, page = real_report
    browser.open(page)
    png = browser.screenshot()
    pdf = browser.pdf()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000
    assert browser.problems() == []
    browser.open_blank()
    seen = pixels(browser, png)
    assert seen["width"] >= 1000 and seen["height"] >= 800
    # text, lines and bars: a real share of dark pixels, but far from all of them
    assert 0.01 < seen["dark"] < 0.5, seen
    assert seen["colors"] > 20, seen


def pixels(browser: Browser, png: bytes) -> dict[str, Any]:
    """What a PNG holds, counted by Chromium itself on a canvas (no image library)."""
    data = base64.b64encode(png).decode()
    return browser.evaluate(  # type: ignore[no-any-return]
        "(async () => { const img = new Image(); img.src = 'data:image/png;base64," + data + "';"
        "await img.decode(); const c = document.createElement('canvas');"
        "c.width = img.width; c.height = img.height; const g = c.getContext('2d');"
        "g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;"
        "let dark = 0, n = 0; const colors = new Set();"
        "for (let i = 0; i < d.length; i += 4) { n++; if (d[i] + d[i+1] + d[i+2] < 384) dark++;"
        "colors.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]); }"
        "return {width: c.width, height: c.height, dark: dark / n, colors: colors.size}; })()",
        await_promise=True,
    )


def test_an_xss_corpus_renders_as_text(browser: Browser, tmp_path: Path) -> None:
    export = xss_export(tmp_path)
    feedback = tmp_path / HOSTILE_NAME
    converted = run_cli(
        "convert", str(export), "-o", str(feedback), "-q",
        "--metadata", "x<script>alert(12)</script>=<b onclick=window.__xss=13>v</b>",
        "--trace-id", "<svg onload=window.__xss=14>{chat_id}:{message_id}",
    )  # fmt: skip
    assert converted.code == 0, converted.stderr
    page = tmp_path / "xss.html"
    result = run_cli("report", str(feedback), "--export", str(export), "-o", str(page))
    assert result.code == 0, result.stderr
    url = browser.open(page)
    assert browser.requests() == [url]
    assert browser.problems() == []
    run = browser.evaluate
    assert run("typeof window.__xss") == "undefined"
    injected = (
        "script, iframe, img, link, base, object, embed, math, textarea, a[href^=javascript],"
        " svg foreignObject, body style, svg:not(.chart)"
    )
    assert run(f"document.querySelectorAll('{injected}').length") == 0
    assert run("document.querySelectorAll('meta').length") == 6
    assert run("document.querySelectorAll('style').length") == 1
    with_handlers = (
        "[...document.querySelectorAll('*')]"
        ".filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length"
    )
    assert run(with_handlers) == 0
    comments = run(
        "[...document.querySelectorAll('table.free-text tbody tr')]"
        ".filter(r => r.cells[2].textContent === 'comment').map(r => r.cells[3].textContent)"
    )
    shown = [text.replace("\u202e", "⟨U+202E⟩") for text in XSS]  # never reversed on screen
    assert comments[-len(XSS) :] == shown
    body = run("document.body.innerText")
    for expected in (
        HOSTILE_NAME,
        XSS[3],
        "x<script>alert(12)</script>",
        "<b onclick=window.__xss=13>v</b>",
    ):
        assert expected in body, expected
    assert run("document.title") == f"What leaves: {HOSTILE_NAME}"
    assert run("getComputedStyle(document.body).display") == "block"
    tags = run(
        "[...document.querySelectorAll('table.free-text tbody tr')]"
        ".filter(r => r.cells[2].textContent === 'tags').map(r => r.cells[3].textContent)"
    )
    assert f"{XSS[0]},{XSS[2]}" in tags
