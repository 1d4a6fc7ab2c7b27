"""The workbench on the bundled model in a real headless chromium (slow): the demo run is listed and opens, the
lens, the Eiffel Tower trace and a ROME edit run from the page. Screenshots go to $LMSCOPE_SCREENSHOTS (the
README's come from here: LMSCOPE_SCREENSHOTS=docs/figures) or to the test's temporary folder."""

import os
import time
from pathlib import Path

import pytest

import lmscope
from lmscope.cli import main
from lmscope.web import Background
from lmscope.web.tasks import Workbench
from tests.web.browser import browser, open_page
from tests.web.http import Http

pytestmark = pytest.mark.slow

PROMPT = "The Eiffel Tower is located in the city of"
WHOLE = """() => { const box = document.querySelector('#try-result table.heat').getBoundingClientRect();
                   return {right: box.right, width: innerWidth, page: document.scrollingElement.scrollWidth}; }"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    results = tmp_path_factory.mktemp("web") / "out"
    assert main(["lens", "--out", str(results / "demo")]) == 0  # what `python3 dev.py demo` writes
    server = Background(Workbench(lmscope.load("smollm2-135m"), results / "serve"), [results])
    yield server
    server.stop()


def test_demo_run_lens_and_eiffel_trace_in_the_browser(served, tmp_path):
    shots = Path(os.environ.get("LMSCOPE_SCREENSHOTS", tmp_path))
    manager, chromium = browser()
    try:
        page, errors = open_page(chromium, served.login_url, 1400, 900)
        page.click("#runs-table tbody tr:has-text('0/demo')")
        page.wait_for_selector("#run-view table.heat")
        assert page.locator("#run-view table.heat tbody tr").count() == 31  # 30 layers + embeddings
        assert "Paris" in page.inner_text("#run-view .kv.key")
        page.click("#tab-try")
        page.fill("#p-prompt", "The Eiffel Tower\nis located in the city of")  # a newline token, shown as ↵
        page.click("#run-btn")
        page.wait_for_selector("#try-result .saved", timeout=120_000)
        assert "' Paris'" in page.inner_text("#try-result .kv.key")
        assert "↵" in page.inner_text("#try-result table.heat thead")
        page.screenshot(path=str(shots / "workbench-lens.png"))
        page.select_option("#task", "trace")
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-subject", "The Eiffel Tower")
        page.click("#run-btn")
        page.wait_for_selector("#try-result .saved", timeout=900_000)  # the paper's defaults: 10 samples, 3 kinds
        heat = page.locator("#try-result table.heat")
        assert heat.count() == 3 and "' Paris'" in page.inner_text("#try-result .kv.key")
        assert heat.first.locator("thead th").count() == 31  # a corner + 30 layers
        box = page.evaluate(WHOLE)  # the whole map in view at 1400 px: no layer cut off, no page-wide scrollbar
        assert box["right"] <= box["width"] and box["page"] <= box["width"], box
        assert page.locator("#try-result .legend").count() == 3
        heat.first.locator("tbody td").nth(5).hover()
        assert "P*_restored" in page.inner_text("#tooltip")
        page.screenshot(path=str(shots / "workbench-trace.png"), full_page=True)
        assert not errors, errors
    finally:
        chromium.close()
        manager.stop()


def test_a_first_rome_edit_takes_seconds_then_undo(served):
    http = Http(served.url, served.token)
    params = {"prompt": "{} is located in the city of", "subject": "The Eiffel Tower", "target": " Rome"}
    started = time.monotonic()
    status, job = http.post("/api/jobs", {"task": "edit", "params": params})  # the defaults: layer auto (4)
    final = http.wait(job["id"], timeout=900)
    took = time.monotonic() - started
    assert final["type"] == "done", final
    view = http.get(f"/api/view?run={final['run']}")[1]
    table = next(b for b in view["blocks"] if b["title"] == "before and after the edit")
    before, after = table["rows"]
    assert after[1] > 0.5 > before[1] and "Rome" in after[2], table  # P(target) and the generation moved
    assert view["key"]["layer"] == 4 and took < 300, took  # the shipped statistics: no 30-minute pass first
    undo = http.post("/api/jobs", {"task": "undo", "params": {}})[1]
    assert http.wait(undo["id"])["type"] == "done" and http.get("/api/model")[1]["edited"] == []


def test_prompts_are_bounded_in_tokens(served):
    http = Http(served.url, served.token)
    jobs = len(http.get("/api/jobs")[1])
    status, body = http.post("/api/jobs", {"task": "lens", "params": {"prompt": "\U0001F600" * 1000}})
    assert status == 400 and "tokens long; the workbench runs at most 256" in body["error"]  # 1,000 characters
    assert len(http.get("/api/jobs")[1]) == jobs  # nothing was queued
