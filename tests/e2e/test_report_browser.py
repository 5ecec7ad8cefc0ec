"""The report in a real browser: Debian's chromium, driven by playwright, opening report.html from file://.

Needs ``chromium`` (apt) and the ``playwright`` Python package; ``scripts/install-browser`` installs both. Without
them the test is skipped locally, and fails in CI (``CI`` set), where the browser check is part of "done".

The screenshot goes to a temporary folder, or to ``docs/report.png`` with ``ADAPTLAB_WRITE_SCREENSHOT=1``. By
default the page is the report of a hand-built ladder; ``ADAPTLAB_SCREENSHOT_LADDER=runs/rotten_tomatoes`` reports
(and screenshots) a real ladder output folder instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.unit.test_report import make_ladder

from adaptlab.reporting.report import write_report

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]


def _browser_or_skip():
    """playwright's sync API, or a skip (locally) / failure (in CI) saying what is missing and how to install it."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright Python package")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing.append(f"chromium ({CHROMIUM})")
    if missing:
        reason = f"{' and '.join(missing)} not installed; run scripts/install-browser"
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    return sync_playwright


def test_report_in_headless_chromium(tmp_path):
    sync_playwright = _browser_or_skip()
    real = os.environ.get("ADAPTLAB_SCREENSHOT_LADDER")
    ladders = [Path(real)] if real else [make_ladder(tmp_path / "runs", "minilm", model="minilm")]
    page_path = write_report(ladders, tmp_path / "report", quiet=True)[1]
    url = page_path.resolve().as_uri()
    shot = REPO / "docs" / "report.png" if os.environ.get("ADAPTLAB_WRITE_SCREENSHOT") == "1" else (
        tmp_path / "report.png")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                    args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")

            # loads from file:// with no console errors and nothing fetched from anywhere else
            assert page.title().endswith("adaptlab report")
            assert problems == []
            assert all(u.startswith(("file://", "data:")) for u in requests), requests

            # every chart has rendered, visible elements
            charts = page.locator("figure.chart")
            ids = charts.evaluate_all("els => els.map(e => e.id)")
            assert len(ids) >= (5 if real else 6), ids
            for chart_id in ids:
                svg = page.locator(f"figure#{chart_id} svg")
                box = svg.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 100, (chart_id, box)
                drawn = svg.locator("path, use, line, polyline, rect").count()
                assert drawn > 10, (chart_id, drawn)
                assert svg.locator("text").count() > 3, chart_id  # axis labels and ticks

            # sorting a column works: rung name ascending, then descending; then by training time
            def column(n: int) -> list[str]:
                return page.locator(f"#leaderboard tbody tr td:nth-child({n})").all_inner_texts()

            def header(label: str):
                return page.locator("#leaderboard thead th", has=page.locator("button", has_text=label))

            names = column(2)
            header("rung").locator("button").click()
            assert column(2) == sorted(names, key=str.lower)
            assert header("rung").get_attribute("aria-sort") == "ascending"
            header("rung").locator("button").click()
            assert column(2) == sorted(names, key=str.lower, reverse=True)
            assert header("rung").get_attribute("aria-sort") == "descending"
            header("train s").locator("button").click()
            seconds = [float(s) for s in column(8) if s != "-"]
            assert seconds == sorted(seconds) and len(seconds) >= 2
            assert column(8)[-1] == "-" or "-" not in column(8)  # missing values sort last
            if not real:
                assert column(2)[:3] == ["zero_shot", "lora", "full"]  # 0.5 s, 162 s, 235 s; failed rung last
                assert column(2)[-1] == "top_layers"
            header("rung").locator("button").click()  # back to a readable order for the screenshot
            header("#").locator("button").click()

            # the recommendation is on the page, and clicking around raised no errors either
            assert "Ship" in page.locator("#recommendation").inner_text()
            assert problems == []

            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
