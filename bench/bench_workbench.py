"""The workbench (`lmscope serve`) against the library, in one run on one machine.

1. Lens latency: the library call `logit_lens(lm, prompt)` on a 12-token prompt vs the same lens asked of a served
   workbench (a separate `lmscope serve` process on loopback): POST the job and read its event stream until the
   result arrives (HTTP), and in headless chromium from the click on Run until the heat map is in the DOM.
2. Trace page: the run view of a 30-layer x 10-token trace (3 kinds) opened in chromium, from the click on the run
   to the rendered heat maps (first open: read from disk; then cached on the server).
3. Load: 50 concurrent API reads (run listing, run views, jobs, health) while the server runs a trace job: all must
   answer 200; then the job's saved result must equal `lmscope trace`'s, bit for bit.

Writes bench/results/workbench-<model>-cpu.md (and .json).

    python bench/bench_workbench.py [--model smollm2-135m] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.io import load_result  # noqa: E402
from lmscope.methods.lens import logit_lens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LENS_PROMPT = "Eiffel Tower is located in the heart of the city of"  # 12 tokens
TRACE_PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "The Eiffel Tower"


AUTH: dict[str, str] = {}  # Authorization: Bearer <the token the server printed>


def open_url(url: str, timeout: float = 120):
    return urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=timeout)


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json", **AUTH})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def until(url: str, job: str, kind: str) -> dict:
    """Read a job's event stream until an event of ``kind`` (or the job's end)."""
    with open_url(f"{url}/api/jobs/{job}/events", timeout=1800) as stream:
        for line in stream:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event["type"] in (kind, "failed", "cancelled"):
                    return event
    raise RuntimeError("the event stream ended early")


def get(url: str) -> tuple[int, float]:
    t = time.perf_counter()
    with open_url(url) as r:
        r.read()
        return r.status, time.perf_counter() - t


def library_lens(lm, rounds: int) -> list[float]:
    logit_lens(lm, LENS_PROMPT)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        logit_lens(lm, LENS_PROMPT)
        times.append(time.perf_counter() - t)
    return times


def served_lens(url: str, rounds: int) -> list[float]:
    until(url, post(f"{url}/api/jobs", {"task": "lens", "params": {"prompt": LENS_PROMPT}})["id"], "done")
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        job = post(f"{url}/api/jobs", {"task": "lens", "params": {"prompt": LENS_PROMPT}})["id"]
        until(url, job, "result")
        times.append(time.perf_counter() - t)
        until(url, job, "done")  # the run folder's figures are drawn after the result is sent: not timed
    return times


def start_server(args, folder: Path) -> tuple[subprocess.Popen, str, str]:
    """A `lmscope serve` process: (process, base URL, the printed address with its token)."""
    port = 8700 + os.getpid() % 200
    cmd = [sys.executable, "-m", "lmscope", "--model", args.model, "-q", "serve", "--results", str(folder),
           "--runs-out", str(folder / "serve"), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "workbench" not in line:
        raise RuntimeError(f"the server did not start: {line!r}")
    login = proc.stdout.readline().strip()
    AUTH["Authorization"] = f"Bearer {login.split('?token=', 1)[1]}"
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            get(f"{url}/api/health")
            return proc, url, login
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server does not answer")


def browser_times(login: str, trace_run: str, rounds: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from tests.web.browser import chromium_path

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        # the page's CSP forbids eval; the harness's own timing predicates need it, so they bypass the CSP
        page = chromium.new_page(viewport={"width": 1500, "height": 1000}, bypass_csp=True)
        page.goto(login)  # signs in (the token for a cookie)
        page.wait_for_selector(f"#runs-table tbody tr[data-run='{trace_run}']")
        opens = []
        for _ in range(rounds):
            page.evaluate("window.lmscopeRendered = 0")
            t0 = page.evaluate(f"(() => {{ const t = performance.now(); "
                               f"document.querySelector(\"tr[data-run='{trace_run}']\").click(); return t; }})()")
            page.wait_for_function("window.lmscopeRendered > 0")
            opens.append((page.evaluate("window.lmscopeRendered") - t0) / 1000)
            assert page.locator("#run-view table.heat").count() == 3
        page.click("#tab-try")
        page.fill("#p-prompt", LENS_PROMPT)
        lens = []
        for _ in range(rounds):
            page.evaluate("window.lmscopeRendered = 0")
            t0 = page.evaluate("(() => { const t = performance.now(); document.querySelector('#run-btn').click(); "
                               "return t; })()")
            page.wait_for_function("window.lmscopeRendered > 0")
            lens.append((page.evaluate("window.lmscopeRendered") - t0) / 1000)
            page.wait_for_selector("#try-result .saved")  # the run folder is written: next round
        chromium.close()
    return {"trace_open_first_s": opens[0], "trace_open_median_s": statistics.median(opens[1:] or opens),
            "lens_browser_median_s": statistics.median(lens)}


def load_test(url: str, lens_run: str, folder: Path, args) -> dict:
    job = post(f"{url}/api/jobs", {"task": "trace", "params": {"prompt": TRACE_PROMPT, "subject": SUBJECT}})["id"]
    until(url, job, "started")
    urls = [f"{url}/api/runs", f"{url}/api/view?run={lens_run}", f"{url}/api/jobs", f"{url}/api/health",
            f"{url}/api/jobs/{job}"] * 10
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(get, urls))
    running = json.loads(open_url(f"{url}/api/jobs/{job}").read())["state"]
    final = until(url, job, "done")
    cli = folder / "cli-trace"
    subprocess.run([sys.executable, "-m", "lmscope", "--model", args.model, "-q", "trace", TRACE_PROMPT,
                    "--subject", SUBJECT, "--out", str(cli)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    served = load_result(folder / final["run"].split("/", 1)[1] / "result")
    reference = load_result(cli / "result")
    equal = served.scores.keys() == reference.scores.keys() and all(
        torch.equal(served.scores[k], reference.scores[k]) for k in reference.scores)
    times = sorted(t for _, t in answers)
    return {"reads": len(answers), "ok": sum(s == 200 for s, _ in answers), "job_state_after_reads": running,
            "read_p50_s": times[len(times) // 2], "read_max_s": times[-1], "job_equals_cli": equal,
            "trace_run": final["run"], "trace_tokens": len(served.tokens),
            "trace_layers": served.scores["hidden"].shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = lmscope.load(args.model)
    n_tokens = len(lm.tokenize(LENS_PROMPT)["input_ids"][0])
    lib = library_lens(lm, args.rounds)
    del lm
    folder = Path(tempfile.mkdtemp(prefix="lmscope-bench-web-"))
    proc, url, login = start_server(args, folder)
    try:
        http = served_lens(url, args.rounds)
        lens_run = json.loads(open_url(f"{url}/api/runs").read())[0]["id"]
        load = load_test(url, lens_run, folder, args)
        browser = browser_times(login, load["trace_run"], max(3, args.rounds // 3))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    row = {"model": args.model, "lens_tokens": n_tokens, "library_lens_median_s": statistics.median(lib),
           "http_lens_median_s": statistics.median(http), **browser, **load}
    row["http_ratio"] = row["http_lens_median_s"] / row["library_lens_median_s"]
    row["browser_ratio"] = row["lens_browser_median_s"] / row["library_lens_median_s"]
    write(row, args)


def write(r: dict, args) -> None:
    lines = [f"# Workbench vs library, {r['model']} on CPU ({platform.node()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads)", "",
             f"`python bench/bench_workbench.py --model {args.model} --rounds {args.rounds}` (medians)", "",
             "| measurement | value | target |", "|---|---|---|",
             f"| logit lens, library call ({r['lens_tokens']} tokens) | {r['library_lens_median_s'] * 1e3:.1f} ms | |",
             f"| logit lens through the API (POST + event stream to the result) | "
             f"{r['http_lens_median_s'] * 1e3:.1f} ms"
             f" ({r['http_ratio']:.2f}x) | <= 1.3x |",
             f"| logit lens in chromium (click on Run to heat map in the DOM) | "
             f"{r['lens_browser_median_s'] * 1e3:.1f} ms"
             f" ({r['browser_ratio']:.2f}x) | <= 1.3x |",
             f"| {r['trace_layers']}-layer x {r['trace_tokens']}-token trace page, first open (from disk) | "
             f"{r['trace_open_first_s'] * 1e3:.0f} ms | < 1 s |",
             f"| same page opened again (server cache) | {r['trace_open_median_s'] * 1e3:.0f} ms | < 1 s |",
             f"| concurrent reads during a trace job | {r['ok']}/{r['reads']} answered 200 (p50 "
             f"{r['read_p50_s'] * 1e3:.0f} ms, max {r['read_max_s'] * 1e3:.0f} ms; job {r['job_state_after_reads']}"
             f" meanwhile) | 50/50 |",
             f"| the job's trace equals `lmscope trace`'s | {r['job_equals_cli']} | True |", ""]
    RESULTS.mkdir(exist_ok=True)
    name = f"workbench-{r['model']}-cpu"
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    (RESULTS / f"{name}.json").write_text(json.dumps(r, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
