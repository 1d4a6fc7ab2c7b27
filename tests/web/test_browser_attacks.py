"""The security review's attacks, made by real web pages in headless chromium: a page of another origin (a second
loopback server, reached as http://evil.example through --host-resolver-rules) tries to start jobs on a workbench
the user is signed in to, and a page of a rebound name (evil.example resolving to loopback, then the port taken by
the workbench) tries to read it. Each attack is run against a workbench with its token and one started with
--no-token, so that each defence is shown to hold on its own (cookie / Host allow-list / JSON-only same-origin
writes)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmscope.web import Background
from lmscope.web.tasks import Workbench
from tests.helpers import tiny_lm
from tests.web.browser import browser
from tests.web.http import Http

RESOLVE = "--host-resolver-rules=MAP evil.example 127.0.0.1"
ATTACK = """<!DOCTYPE html><html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="sink">
  <input name='{"task": "edit", "params": {"prompt": "{} is in", "subject": "Rome", "target": " Paris", "x": "'
         value='"}}'></form>
<form id="urlencoded" method="POST" target="sink"><input name="task" value="undo"></form>
<form id="multipart" method="POST" enctype="multipart/form-data" target="sink"><input name="task" value="undo"></form>
<script>
const EDIT = JSON.stringify({task: "edit", params: {prompt: "{} is in", subject: "Rome", target: " Paris"}});
async function crossSite(base) {           // from http://evil.example:A to the workbench at http://127.0.0.1:P
  const out = {};
  for (const id of ["plain", "urlencoded", "multipart"]) {
    const form = document.getElementById(id); form.action = base + "/api/jobs"; form.submit();
    await new Promise((r) => setTimeout(r, 300));
  }
  try { await fetch(base + "/api/jobs", {method: "POST", mode: "no-cors", credentials: "include", body: EDIT,
                                        headers: {"content-type": "text/plain"}}); out.nocors = "sent"; }
  catch (e) { out.nocors = "blocked: " + e; }
  try { const r = await fetch(base + "/api/jobs", {method: "POST", credentials: "include", body: EDIT,
                                                   headers: {"content-type": "application/json"}});
        out.cors = r.status; } catch (e) { out.cors = "blocked"; }
  try { const r = await fetch(base + "/api/runs", {credentials: "include"}); out.read = await r.text(); }
  catch (e) { out.read = "blocked"; }
  return out;
}
async function sameOrigin() {             // this page's own origin, after its name was rebound to the workbench
  const runs = await fetch("/api/runs", {credentials: "include"});
  const job = await fetch("/api/jobs", {method: "POST", credentials: "include", body: EDIT,
                                        headers: {"content-type": "application/json"}});
  return {runs: runs.status, runsBody: await runs.text(), job: job.status};
}
</script></body></html>"""


class AttackPage(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (http.server's name)
        body = ATTACK.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def attacker(port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), AttackPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def chromium():
    manager, chromium = browser(RESOLVE)
    yield chromium
    chromium.close()
    manager.stop()


def no_jobs_and_unedited(server: Background) -> bool:
    http = Http(server.url, server.token or None)
    return http.get("/api/jobs")[1] == [] and http.get("/api/model")[1]["edited"] == []


@pytest.mark.parametrize("no_token", [False, True], ids=["token", "no-token"])
def test_a_page_of_another_origin_cannot_start_a_job(lm, tmp_path, chromium, no_token):
    server = Background(Workbench(lm, tmp_path / "serve"), [tmp_path], no_token=no_token)
    evil = attacker()
    try:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(server.login_url)  # the user is signed in to the workbench in this browser
        page.wait_for_selector("#model:has-text('layers')")
        attack = context.new_page()
        attack.goto(f"http://evil.example:{evil.server_port}/")
        out = attack.evaluate(f"crossSite({server.url!r})")
        assert out["cors"] == "blocked" and out["read"] == "blocked", out  # no CORS answer: nothing readable
        assert no_jobs_and_unedited(server)  # neither the forms nor the no-cors fetch started anything
    finally:
        evil.shutdown()
        server.stop()


@pytest.mark.parametrize("no_token", [False, True], ids=["token", "no-token"])
def test_a_rebound_name_cannot_read_or_drive_the_workbench(lm, tmp_path, chromium, no_token):
    evil = attacker()
    port = evil.server_port
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"http://evil.example:{port}/")  # the attacker's page, from the attacker's server ...
    evil.shutdown()
    evil.server_close()
    server = Background(Workbench(lm, tmp_path / "serve"), [tmp_path], port=port, no_token=no_token)
    try:  # ... and now its name leads to the workbench on the same port: a same-origin request for the page
        out = page.evaluate("sameOrigin()")
        assert out["runs"] == 403 and "host" in out["runsBody"] and out["job"] == 403, out
        assert no_jobs_and_unedited(server)
    finally:
        server.stop()
