"""Make docs/report.png, the README's picture of `owui-replay report`, from the bundled
Open WebUI 0.12.4 export, with the same headless Chromium the tests use.

    .venv/bin/python docs/make_report_png.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from owui_replay.cli import main  # noqa: E402
from tests.browser import Browser  # noqa: E402

EXPORT = ROOT / "fixtures" / "openwebui-0.12.4" / "export.json"
WIDTH, HEIGHT, SCALE = 1200, 1100, 0.75


def make(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative names, as in the README's chain
        Path("week1").mkdir()
        shutil.copy(EXPORT, "week1/export.json")
        convert = ["convert", "week1/export.json", "-o", "week1/feedback.jsonl", "-q"]
        assert main([*convert, "--drop-comments"]) == 0
        report = ["report", "week1/feedback.jsonl", "--export", "week1/export.json", "-q"]
        assert main(report) == 0
        browser = Browser()
        try:
            browser.open(Path("week1/feedback.report.html"))
            clip = {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT, "scale": SCALE}
            target.write_bytes(browser.screenshot(clip))
        finally:
            browser.close()
            os.chdir(ROOT)


if __name__ == "__main__":
    out = ROOT / "docs" / "report.png"
    make(out)
    print(f"{out}: {out.stat().st_size:,} bytes")
