"""The workbench served for real (uvicorn on a free loopback port): concurrent reads during a job, and the page
driven in a headless chromium (tiny model here; the bundled model's browser test is in tests/real)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lmscope.io import load_result
from lmscope.methods.trace import TraceConfig, causal_trace
from lmscope.web import Background
from lmscope.web.tasks import Workbench
from tests.helpers import tiny_lm
from tests.web.browser import browser, open_page

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture
def served(lm, tmp_path):
    server = Background(Workbench(lm, tmp_path / "results" / "serve"), [tmp_path / "results"])
    yield server
    server.stop()


def get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, json.loads(r.read())


def post(url: str, body: dict):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def wait(url: str, job: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/jobs/{job}/events", timeout=300) as stream:
        for line in stream:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event["type"] in ("done", "failed", "cancelled"):
                    return event
    raise AssertionError("the event stream ended without a final event")


def test_binds_loopback_and_answers_50_concurrent_reads_during_a_job(served, lm, tmp_path):
    assert served.url.startswith("http://127.0.0.1:")
    lens = post(f"{served.url}/api/jobs", {"task": "lens", "params": {"prompt": PROMPT}})
    run = wait(served.url, lens["id"])["run"]
    params = {"prompt": PROMPT, "subject": "The Eiffel Tower", "samples": 10}
    job = post(f"{served.url}/api/jobs", {"task": "trace", "params": params})
    urls = [f"{served.url}/api/runs", f"{served.url}/api/view?run={run}", f"{served.url}/api/jobs",
            f"{served.url}/api/health", f"{served.url}/api/jobs/{job['id']}"] * 10
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(get, urls))
    assert len(answers) == 50 and all(status == 200 for status, _ in answers)
    assert any(body.get("running") == [job["id"]] for _, body in answers if isinstance(body, dict))
    final = wait(served.url, job["id"])
    assert final["type"] == "done"
    saved = load_result(tmp_path / "results" / final["run"].split("/", 1)[1] / "result")
    torch.manual_seed(0)
    direct = causal_trace(lm, PROMPT, "The Eiffel Tower", None, TraceConfig(samples=10))
    assert all(torch.equal(saved.scores[k], direct.scores[k]) for k in direct.scores)


def test_errors_over_http_are_json_not_tracebacks(served):
    with pytest.raises(urllib.error.HTTPError) as err:
        get(f"{served.url}/api/file?run=0/serve&name=..%2F..%2Fetc%2Fpasswd")
    assert err.value.code == 404 and "error" in json.loads(err.value.read())
    with pytest.raises(urllib.error.HTTPError) as err:
        post(f"{served.url}/api/jobs", {"task": "lens", "params": {"prompt": ""}})
    body = err.value.read().decode()
    assert err.value.code == 400 and "Traceback" not in body and "needs 'prompt'" in body


def test_the_page_in_a_real_browser(served, tmp_path):
    manager, chromium = browser()
    try:
        page, errors = open_page(chromium, served.url)
        page.wait_for_function("document.querySelector('#model').textContent.includes('layers')")
        page.click("#tab-try")
        page.fill("#p-prompt", PROMPT)
        page.click("#run-btn")
        page.wait_for_selector("#try-result table.heat td", timeout=60_000)
        assert page.locator("#try-result table.heat tbody tr").count() == 4  # 3 layers + embeddings
        page.wait_for_selector("#try-result .saved", timeout=60_000)  # the run folder was written
        page.locator("#try-result table.heat td").first.hover()
        assert page.locator("#tooltip").is_visible() and "layer" in page.inner_text("#tooltip")
        page.select_option("#task", "trace")
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-subject", "The Eiffel Tower")
        page.click("#options summary")
        page.fill("#p-samples", "3")
        page.click("#run-btn")
        page.wait_for_selector("#try-result .saved", timeout=120_000)
        assert page.locator("#try-result table.heat").count() == 3  # hidden, mlp, attn
        page.select_option("#task", "trace")
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-subject", "Big Ben")  # not in the prompt: one message, nothing queued
        page.click("#run-btn")
        page.wait_for_selector("#job-error:not([hidden])")
        assert "not in the prompt" in page.inner_text("#job-error")
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table tbody tr >> nth=1")
        page.click("#runs-table tbody tr:has-text('TraceResult')")
        page.wait_for_selector("#run-view table.heat")
        page.click("#runs-table th[data-key=kind]")  # sorting keeps every row
        assert page.locator("#runs-table tbody tr").count() == 2
        page.screenshot(path=str(tmp_path / "workbench.png"), full_page=True)
        assert (tmp_path / "workbench.png").stat().st_size > 10_000 and not errors, errors
    finally:
        chromium.close()
        manager.stop()


def test_lmscope_serve_command_warns_off_loopback_and_refuses_a_busy_port(tiny_llama_dir, tmp_path, capsys):
    import socket
    import subprocess
    import sys
    import time

    from lmscope.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "lmscope", "--model", str(tiny_llama_dir), "serve", "--host", "0.0.0.0",
           "--port", str(port), "--results", str(tmp_path), "--runs-out", str(tmp_path / "serve")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "lmscope workbench: http://0.0.0.0:" in proc.stdout.readline()
        for _ in range(100):
            try:
                status, body = get(f"http://127.0.0.1:{port}/api/health")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200 and body["ok"]
        # the port is taken now: one line, before the model loads
        assert main(["--model", str(tiny_llama_dir), "serve", "--port", str(port)]) == 2
        assert "cannot listen" in capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "WARNING" in err and "reachable from other machines" in err
    assert main(["serve", "--port", "70000"]) == 2 and "--port" in capsys.readouterr().err
