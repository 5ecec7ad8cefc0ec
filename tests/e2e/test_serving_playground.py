"""The playground page in headless Chromium (Debian's /usr/bin/chromium driven by playwright; scripts/install-browser
installs both). Two adapters that always disagree side by side, then base vs adapter."""

from __future__ import annotations

import shutil

import pytest
from tests.e2e.test_serving import bert_engine, lean_adapters, live_server  # noqa: F401

from adaptlab.serving.settings import ServerSettings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="run scripts/install-browser")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed; run scripts/install-browser")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def test_playground_compares_two_models_side_by_side(browser, lean_adapters):  # noqa: F811
    from adaptlab.serving.app import create_app

    app = create_app(bert_engine({"lean0": lean_adapters["lean0"], "lean1": lean_adapters["lean1"]}),
                     ServerSettings())
    with live_server(app) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        assert page.locator("#left option").all_inner_texts() == ["base (classification)", "lean0 (classification)",
                                                                  "lean1 (classification)"]
        page.select_option("#left", "lean0")
        page.select_option("#right", "lean1")
        page.fill("#prompt", "the wonderful superb film")
        page.click("#send")
        page.wait_for_selector("body[data-done='1']", timeout=20_000)
        assert page.inner_text("#left-name") == "lean0" and page.inner_text("#right-name") == "lean1"
        assert page.inner_text("#left-out .label") == "LABEL_0"
        assert page.inner_text("#right-out .label") == "LABEL_1"

        page.select_option("#left", "base")  # base classifies zero-shot with the other side's labels
        page.click("#send")
        page.wait_for_selector("body[data-done='1']", timeout=20_000)
        assert page.inner_text("#left-out .label") in ("LABEL_0", "LABEL_1")
        assert page.locator("#left-out tr").count() == 2
        assert page.locator("#left-out .error").count() == 0
        page.close()
