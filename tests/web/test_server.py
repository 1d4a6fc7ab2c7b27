"""The workbench served for real (uvicorn on a free loopback port): concurrent reads during a job, and the page
driven in a headless chromium (tiny model here; the bundled model's browser test is in tests/real)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import torch

from lmscope.io import load_result
from lmscope.methods.trace import TraceConfig, causal_trace
from tests.web.browser import browser, open_page
from tests.web.http import Http

PROMPT = "The Eiffel Tower is located in the city of"


def test_binds_loopback_and_answers_50_concurrent_reads_during_a_job(served, lm, tmp_path):
    assert served.url.startswith("http://127.0.0.1:")
    http = served.http
    lens = http.post("/api/jobs", {"task": "lens", "params": {"prompt": PROMPT}})[1]
    run = http.wait(lens["id"])["run"]
    params = {"prompt": PROMPT, "subject": "The Eiffel Tower", "samples": 10}
    job = http.post("/api/jobs", {"task": "trace", "params": params})[1]
    paths = ["/api/runs", f"/api/view?run={run}", "/api/jobs", "/api/health", f"/api/jobs/{job['id']}"] * 10
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(http.get, paths))
    assert len(answers) == 50 and all(status == 200 for status, _ in answers)
    assert any(body.get("running") == [job["id"]] for _, body in answers if isinstance(body, dict))
    final = http.wait(job["id"])
    assert final["type"] == "done"
    saved = load_result(tmp_path / "results" / final["run"].split("/", 1)[1] / "result")
    torch.manual_seed(0)
    direct = causal_trace(lm, PROMPT, "The Eiffel Tower", None, TraceConfig(samples=10))
    assert all(torch.equal(saved.scores[k], direct.scores[k]) for k in direct.scores)


def test_errors_over_http_are_json_not_tracebacks(served):
    status, body = served.http.get("/api/file?run=0/serve&name=..%2F..%2Fetc%2Fpasswd")
    assert status == 404 and "error" in body
    status, body = served.http.post("/api/jobs", {"task": "lens", "params": {"prompt": ""}})
    assert status == 400 and "Traceback" not in body["error"] and "needs 'prompt'" in body["error"]


def test_the_page_in_a_real_browser(served, tmp_path):
    manager, chromium = browser()
    try:
        page, errors = open_page(chromium, served.login_url)
        page.wait_for_selector("#model:has-text('layers')")
        page.wait_for_selector("#runs-empty:not([hidden])")  # no runs yet: the page says how to make one
        page.click("#tab-try")
        page.fill("#p-prompt", PROMPT)
        page.click("#run-btn")
        page.wait_for_selector("#try-result table.heat td", timeout=60_000)
        assert page.locator("#try-result table.heat tbody tr").count() == 4  # 3 layers + embeddings
        assert page.locator("#try-result .legend").count() == 1  # a colour scale beside the map
        page.wait_for_selector("#try-result .saved", timeout=60_000)  # the run folder was written ...
        page.wait_for_selector("#try-result figure img")  # ... and its figures and files are shown
        assert page.locator("#try-result .files a").count() >= 2
        page.locator("#try-result table.heat td").first.hover()
        assert page.locator("#tooltip").is_visible() and "layer" in page.inner_text("#tooltip")
        page.select_option("#task", "trace")
        assert page.inner_text("#try-result") == ""  # a new task starts clean
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-subject", "The Eiffel Tower")
        page.click("#options summary")
        assert "1..1,000" in page.inner_text("#config-params")  # the bounds the server checks
        page.fill("#p-samples", "3")
        page.click("#run-btn")
        page.wait_for_selector("#try-result .saved", timeout=120_000)
        assert page.locator("#try-result table.heat").count() == 3  # hidden, mlp, attn
        scales = page.eval_on_selector_all("#try-result .legend", "ls => ls.map(l => l.dataset.max)")
        assert len(set(scales)) == 3  # each map on its own scale, as its PNG
        page.select_option("#task", "trace")
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-subject", "Big Ben")  # not in the prompt: one message, nothing queued
        page.click("#run-btn")
        page.wait_for_selector("#job-error:not([hidden])")
        assert "not in the prompt" in page.inner_text("#job-error")
        page.select_option("#task", "lens")
        assert page.is_hidden("#job-error")  # no stale message
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table tbody tr >> nth=1")
        assert page.locator(f"#runs-table tbody tr:has-text('{PROMPT}')").count() == 2  # runs show their prompt
        page.click("#runs-table tbody tr:has-text('Trace')")
        page.wait_for_selector("#run-view table.heat")
        trace_url = page.url
        assert "#run=0/serve/trace-" in trace_url
        page.click("#runs-table tbody tr:has-text('LogitLens')")
        page.wait_for_selector("#run-view h2:has-text('Logit lens')")
        page.go_back()  # the back button returns to the trace
        page.wait_for_selector("#run-view h2:has-text('Causal trace')")
        page.click("#runs-table th[data-key=kind]")  # sorting keeps every row
        assert page.locator("#runs-table tbody tr").count() == 2
        page.goto(served.url + "/#features")
        page.wait_for_selector("#features-empty:not([hidden])")
        assert "sae features" in page.inner_text("#features-empty")
        bookmark = page.context.new_page()  # a bookmark opens the run (same browser: signed in by the cookie)
        bookmark.goto(trace_url)
        bookmark.wait_for_selector("#run-view table.heat")
        stranger, _ = open_page(chromium, trace_url)  # another browser profile has no cookie: the sign-in page
        assert stranger.locator("#token").count() == 1 and stranger.locator("#run-view").count() == 0
        page.screenshot(path=str(tmp_path / "workbench.png"), full_page=True)
        assert (tmp_path / "workbench.png").stat().st_size > 10_000 and not errors, errors
    finally:
        chromium.close()
        manager.stop()


def test_a_reload_finds_the_running_job_and_can_cancel_it(served, lm):
    slow = [b.register_forward_pre_hook(lambda m, a: time.sleep(0.3)) for b in lm.layout.blocks]
    manager, chromium = browser()
    try:
        page, errors = open_page(chromium, served.login_url)
        page.click("#tab-try")
        page.select_option("#task", "generate")
        page.fill("#p-prompt", PROMPT)
        page.fill("#p-max_new_tokens", "40")
        page.click("#run-btn")
        page.wait_for_selector("#progress:not([hidden])")
        assert "#job=" in page.url
        page.goto(served.url + "/")  # a reload without the link: the running job is found again
        page.wait_for_selector("#cancel-btn:enabled", timeout=10_000)
        assert page.is_visible("#progress") and "#job=" in page.url
        page.click("#cancel-btn")
        page.wait_for_selector("#job-error:not([hidden])", timeout=10_000)
        assert "cancelled" in page.inner_text("#job-error") and not errors, errors
    finally:
        for h in slow:
            h.remove()
        chromium.close()
        manager.stop()


def test_a_saved_edit_keeps_its_before_and_after(served):
    params = {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target": " Rome", "layer": 1,
              "mom2_adjustment": False, "v_steps": 2, "max_new_tokens": 3}
    status, job = served.http.post("/api/jobs", {"task": "edit", "params": params})
    run = served.http.wait(job["id"])["run"]
    served.http.post("/api/jobs", {"task": "undo", "params": {}})
    status, view = served.http.get(f"/api/view?run={run}")
    tables = {b["title"]: b for b in view["blocks"] if b["type"] == "table"}
    assert [r[0] for r in tables["before and after the edit"]["rows"]] == ["before", "after"]
    status, entry = served.http.get(f"/api/run?run={run}")
    assert entry["title"] == "The Eiffel Tower is located in" and "target=" in entry["command"]


def test_lmscope_serve_command_off_loopback_prints_an_address_with_the_token(tiny_llama_dir, tmp_path, capsys):
    import socket
    import subprocess
    import sys
    import time
    from urllib.parse import urlsplit

    from lmscope.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "lmscope", "--model", str(tiny_llama_dir), "serve", "--host", "0.0.0.0",
           "--port", str(port), "--results", str(tmp_path), "--runs-out", str(tmp_path / "serve")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "lmscope workbench" in proc.stdout.readline()
        urls = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert urls[0].startswith(f"http://{socket.gethostname()}:{port}/?token=") and "0.0.0.0" not in urls[0]
        token = urlsplit(urls[1]).query.removeprefix("token=")
        assert urls[1] == f"http://127.0.0.1:{port}/?token={token}" and len(token) >= 32
        http = Http(f"http://127.0.0.1:{port}", token)
        for _ in range(100):
            try:
                status, body = http.get("/api/health")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200 and body["ok"]
        assert http.call("GET", "/api/health", auth=False)[0] == 401  # reachable from afar: the token is required
        # the port is taken now: one line, before the model loads
        assert main(["--model", str(tiny_llama_dir), "serve", "--port", str(port)]) == 2
        assert "cannot listen" in capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "WARNING" in err and "reachable from other machines" in err
    assert main(["serve", "--port", "70000"]) == 2 and "--port" in capsys.readouterr().err


def test_a_graph_in_a_real_browser(lm, tmp_path, tiny_llama_dir):
    from lmscope.cli import main
    from lmscope.cli.graphs import load_transcoders
    from lmscope.web import Background
    from lmscope.web.tasks import Workbench
    from tests.cli.test_graph_cli import transcoders

    folder = transcoders(tmp_path / "tc")
    assert main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(folder),
                 "--out", str(tmp_path / "results" / "graph")]) == 0
    served = Background(Workbench(lm, tmp_path / "results" / "serve", transcoders=load_transcoders(folder, lm),
                                  transcoder_source=str(folder)), [tmp_path / "results"])
    manager, chromium = browser()
    try:
        page, errors = open_page(chromium, served.login_url)
        page.wait_for_selector("#model:has-text('layers')")
        page.goto(served.url + "/#run=0/graph")
        page.wait_for_selector("#run-view svg.graph circle")
        lines = page.locator("#run-view svg.graph line")
        assert lines.count() > 0 and page.locator("#run-view svg.graph circle").count() > 3
        page.locator("#run-view svg.graph circle").last.click()  # a logit: only its edges stay
        count = "ls => ls.filter(l => l.style.display {} 'none').length"
        hidden = page.eval_on_selector_all("#run-view svg.graph line", count.format("==="))
        assert 0 < hidden < lines.count() or lines.count() == 1
        page.locator("#run-view svg.graph").click(position={"x": 5, "y": 5})  # the background: every edge again
        shown = page.eval_on_selector_all("#run-view svg.graph line", count.format("!=="))
        assert shown == lines.count() and not errors, errors
        page.locator("#run-view svg.graph circle[fill='#2ca02c']").first.click()  # a feature: clamp it to 0
        page.click("#run-view .node-panel button")
        page.wait_for_selector("#run-view .clamp-result table", timeout=60_000)
        assert "→ 0" in page.inner_text("#run-view .clamp-result") and not errors, errors
        assert page.locator("#run-view .clamp-result table").first.locator("tbody tr").count() >= 10
        page.screenshot(path=str(tmp_path / "graph.png"), full_page=True)
    finally:
        chromium.close()
        manager.stop()
        served.stop()
