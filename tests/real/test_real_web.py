"""The workbench on the bundled model in a real headless chromium (slow): the demo run is listed and opens, the
lens and the Eiffel Tower trace run from the page. Screenshots go to $LMSCOPE_SCREENSHOTS (the README's come
from here: LMSCOPE_SCREENSHOTS=docs/figures) or to the test's temporary folder."""

import os
from pathlib import Path

import pytest

import lmscope
from lmscope.cli import main
from lmscope.web import Background
from lmscope.web.tasks import Workbench
from tests.web.browser import browser, open_page

pytestmark = pytest.mark.slow

PROMPT = "The Eiffel Tower is located in the city of"


def test_demo_run_lens_and_eiffel_trace_in_the_browser(tmp_path):
    shots = Path(os.environ.get("LMSCOPE_SCREENSHOTS", tmp_path))
    manager, chromium = browser()
    results = tmp_path / "out"
    assert main(["lens", "--out", str(results / "demo")]) == 0  # what `python3 dev.py demo` writes
    server = Background(Workbench(lmscope.load("smollm2-135m"), results / "serve"), [results])
    try:
        page, errors = open_page(chromium, server.url, 1500, 1000)
        page.click("#runs-table tbody tr:has-text('0/demo')")
        page.wait_for_selector("#run-view table.heat")
        assert page.locator("#run-view table.heat tbody tr").count() == 31  # 30 layers + embeddings
        assert "Paris" in page.inner_text("#run-view .kv.key")
        page.click("#tab-try")
        page.fill("#p-prompt", PROMPT)
        page.click("#run-btn")
        page.wait_for_selector("#try-result .saved", timeout=120_000)
        assert "' Paris'" in page.inner_text("#try-result .kv.key")
        page.screenshot(path=str(shots / "workbench-lens.png"))
        page.select_option("#task", "trace")
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-subject", "The Eiffel Tower")
        page.click("#run-btn")
        page.wait_for_selector("#try-result .saved", timeout=900_000)  # the paper's defaults: 10 samples, 3 kinds
        heat = page.locator("#try-result table.heat")
        assert heat.count() == 3 and "' Paris'" in page.inner_text("#try-result .kv.key")
        assert heat.first.locator("thead th").count() == 31  # a corner + 30 layers
        heat.first.locator("tbody td").nth(5).hover()
        assert "P*_restored" in page.inner_text("#tooltip")
        page.screenshot(path=str(shots / "workbench-trace.png"), full_page=True)
        assert not errors, errors
    finally:
        chromium.close()
        manager.stop()
        server.stop()
