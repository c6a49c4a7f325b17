"""The evaluation's report.html is real HTML: headings, tables and figures render in a browser.

Drives Debian's ``chromium`` through Playwright's ``executable_path`` (never a browser download) and keeps
the screenshot next to the report.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fracseg.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_report_html_renders_headings_tables_and_figures(
    tmp_path: Path, shared_data: Path, prepared_shared: Path
) -> None:
    from playwright.sync_api import sync_playwright

    out = tmp_path / "eval"
    args = ["evaluate", str(shared_data / "fracatlas"), "--split", "valid", "--limit", "3", "-o", str(out)]
    assert main([*args, "--prepared", str(prepared_shared), "--quiet"]) == 0
    page_html = (out / "report.html").read_text(encoding="utf-8")
    assert "## " not in page_html and "|---|" not in page_html  # no raw Markdown left
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required (make system-tools installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        headings = page.locator("h1, h2, h3").all_inner_texts()
        assert headings[0].startswith("fracseg evaluation") and "Pixel level (fractured images)" in headings
        tables = page.locator("table")
        assert tables.count() >= 2
        assert page.locator("table").first.locator("th").all_inner_texts()[:2] == ["metric", "mean"]
        assert page.locator("table").first.locator("tbody tr").count() == 5  # dice, iou, precision, ...
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) >= 3 and all(w > 0 for w in widths)  # ROC, Dice histogram, overlay grid loaded
        page.screenshot(path=str(out / "report_screenshot.png"), full_page=True)
        browser.close()
    assert (out / "report_screenshot.png").stat().st_size > 10_000
