"""The workbench's API in process (Starlette's test client) on a tiny model: every route and every error."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from starlette.testclient import TestClient

from lmscope.cli import main
from lmscope.io import load_result
from lmscope.methods.autointerp.run import AutointerpResult
from lmscope.methods.lens import LensConfig, logit_lens
from lmscope.methods.sae.features import FeatureExamples
from lmscope.methods.trace import TraceConfig, causal_trace
from lmscope.web import create_app
from lmscope.web.security import Security
from lmscope.web.tasks import Workbench
from tests.helpers import tiny_lm

PROMPT = "The Eiffel Tower is located in"
TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"


@pytest.fixture
def client(lm, results):
    bench = Workbench(lm, results / "serve")
    security = Security.launch(token=TOKEN, allow_hosts=["testserver"])
    with TestClient(create_app(bench, [results], security), headers={"Authorization": f"Bearer {TOKEN}",
                                                                        "Content-Type": "application/json"}) as c:
        c.bench = bench
        yield c


def events(client, job_id: str) -> list[dict]:
    """Every event of a job, read from its server-sent stream until it ends."""
    out = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def run_job(client, task: str, **params) -> list[dict]:
    """Run a job to its end: its events but the progress ones (every job kind reports progress: checked here)."""
    r = client.post("/api/jobs", json={"task": task, "params": params})
    assert r.status_code == 202, r.text
    evs = events(client, r.json()["id"])
    assert evs[2]["type"] == "progress", evs[:3]
    return [e for e in evs if e["type"] != "progress"]


def test_health_model_and_tasks(client, lm):
    assert client.get("/api/health").json() == {"ok": True, "model": lm.name, "running": []}
    model = client.get("/api/model").json()
    assert model["layers"] == lm.n_layers and model["edited"] == []
    tasks = {t["name"]: t for t in client.get("/api/tasks").json()}
    assert set(tasks) == {"lens", "trace", "lesion", "neurons", "edit", "generate", "undo"}
    samples = next(p for p in tasks["trace"]["params"] if p["name"] == "samples")
    assert samples["default"] == 10 and samples["config"]  # the paper default, from TraceConfig
    readout = next(p for p in tasks["lens"]["params"] if p["name"] == "readout")
    assert readout["choices"] == ["auto", "logit", "tuned"] and readout["default"] == "logit"  # the page's switch


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text and "cdn" not in page.text.lower()
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/app.css").status_code == 200
    for bad in ("/static/index.py", "/static/..%2fapp.py", "/static/%2e%2e%2fapp.py"):
        assert client.get(bad).status_code == 404


def test_lens_job_writes_a_cli_run_folder_and_equals_the_library(client, lm, results):
    evs = run_job(client, "lens", prompt=PROMPT, top_k=3)
    assert [e["type"] for e in evs] == ["queued", "started", "result", "run", "done"]
    view = evs[2]["view"]
    heat = view["blocks"][0]
    n_tokens = len(lm.to_str_tokens(lm.tokenize(PROMPT)["input_ids"][0]))
    assert len(heat["rows"]) == lm.n_layers + 1 and len(heat["cols"]) == n_tokens
    assert heat["rows"][0] == str(lm.n_layers - 1) and "layer" in heat["hover"][0][0]
    run_id = evs[3]["run"]
    folder = results / run_id.split("/", 1)[1]
    for name in ("lens.json", "lens.png", "lens_curves.png", "report.html", "result/cfg.json", "command.json"):
        assert (folder / name).is_file(), name
    saved, direct = load_result(folder / "result"), logit_lens(lm, PROMPT, LensConfig(top_k=3))
    assert saved.top_tokens == direct.top_tokens and torch.equal(saved.top_probs, direct.top_probs)
    info = json.loads((folder / "command.json").read_text())
    assert info["via"] == "serve" and info["params"] == {"prompt": PROMPT, "top_k": 3}
    listing = client.get("/api/runs").json()
    assert listing[0]["id"] == run_id and listing[0]["kind"] == "LogitLensResult" and "lens.png" in listing[0]["files"]
    assert client.get("/api/view", params={"run": run_id}).json()["blocks"][0]["values"] == heat["values"]
    png = client.get("/api/file", params={"run": run_id, "name": "lens.png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_trace_job_equals_the_library_call(client, lm, results):
    job = client.post("/api/jobs", json={"task": "trace", "params": {
        "prompt": PROMPT, "subject": "The Eiffel Tower", "samples": 2, "kinds": ["hidden", "mlp"]}}).json()
    evs = events(client, job["id"])
    assert evs[-1]["type"] == "done", evs[-1]
    assert any(e["type"] == "progress" and e["desc"] == "trace" for e in evs)  # progress reaches the page
    evs = [e for e in evs if e["type"] != "progress"]
    saved = load_result(results / evs[-1]["run"].split("/", 1)[1] / "result")
    torch.manual_seed(0)
    direct = causal_trace(lm, PROMPT, "The Eiffel Tower", None, TraceConfig(samples=2, kinds=("hidden", "mlp")))
    assert set(saved.scores) == {"hidden", "mlp"}
    for kind in saved.scores:
        assert torch.equal(saved.scores[kind], direct.scores[kind])
    view = next(e for e in evs if e["type"] == "result")["view"]
    assert [b["rows"][0] for b in view["blocks"]][0].endswith("*")  # the subject's tokens are starred


def test_lesion_neurons_and_generic_views(client, lm, results, tmp_path):
    lesion = run_job(client, "lesion", prompt=PROMPT, layer=1, top_k=3)
    assert lesion[-1]["type"] == "done" and lesion[2]["view"]["blocks"][0]["type"] == "table"
    neurons = run_job(client, "neurons", prompt=PROMPT, top_k=4)
    table = neurons[2]["view"]["blocks"][1]
    assert table["columns"][0] == "neuron" and len(table["rows"]) == 4
    # a CLI run of another kind (trace-dataset needs data; a sensitivity result is a generic one)
    assert main(["--model", "x", "lens", "", "--out", str(results / "bad")]) == 2  # bad input: nothing listed
    listing = client.get("/api/runs").json()
    assert {r["kind"] for r in listing} == {"LesionResult", "NeuronResult"}


def test_cli_runs_are_listed_with_their_command(client, results, tiny_llama_dir):
    assert main(["--model", str(tiny_llama_dir), "lens", PROMPT, "--out", str(results / "cli" / "lens")]) == 0
    run = next(r for r in client.get("/api/runs").json() if r["id"] == "0/cli/lens")
    assert run["command"].startswith("lmscope --model") and " lens " in run["command"] and run["via"] == "cli"
    assert client.get("/api/view", params={"run": "0/cli/lens"}).json()["kind"] == "LogitLensResult"


def test_a_graph_run_is_drawn_as_a_graph(client, results, tiny_llama_dir, tmp_path):
    from tests.cli.test_graph_cli import transcoders

    folder = transcoders(tmp_path / "tc")
    assert main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(folder),
                 "--out", str(results / "cli" / "graph")]) == 0
    view = client.get("/api/view", params={"run": "0/cli/graph"}).json()
    assert view["kind"] == "AttributionGraph" and view["title"].startswith("Attribution graph")
    graph = view["blocks"][0]
    assert graph["type"] == "graph" and graph["tokens"] and graph["layers"] == 3
    kinds = {n["kind"] for n in graph["nodes"]}
    assert {"token", "logit"} <= kinds
    ids = {n["id"] for n in graph["nodes"]}
    assert graph["edges"] and all(e["s"] in ids and e["t"] in ids for e in graph["edges"])
    assert 0 <= view["key"]["completeness"] <= 1


def test_rome_edit_generate_and_undo(client, lm):
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    generated = run_job(client, "generate", prompt=PROMPT, max_new_tokens=3)[2]["payload"]["generation"]
    evs = run_job(client, "edit", prompt="{} is located in", subject="The Eiffel Tower", target=" Rome",
                  mom2_adjustment=False, v_steps=3, layer=1, max_new_tokens=3)
    assert evs[-1]["type"] == "done", evs[-1]
    assert client.get("/api/model").json()["edited"]  # the page shows the edit in force
    assert run_job(client, "generate", prompt=PROMPT, max_new_tokens=3)[2]["payload"]["edited"]
    undone = run_job(client, "undo")[2]["payload"]["undone"]
    assert len(undone) == 1 and client.get("/api/model").json()["edited"] == []
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())  # bit for bit
    assert run_job(client, "generate", prompt=PROMPT, max_new_tokens=3)[2]["payload"]["generation"] == generated


@pytest.mark.parametrize("body, status, message", [
    ({"task": "magic"}, 404, "no task"),
    ({"params": {}}, 400, "task"),
    ({"task": "lens", "params": {"prompt": "  "}}, 400, "empty prompt"),
    ({"task": "lens", "params": {}}, 400, "needs 'prompt'"),
    ({"task": "lens", "params": {"prompt": "a", "top_k": "5"}}, 400, "integer"),
    ({"task": "lens", "params": {"prompt": "a", "top_k": 0}}, 400, "top-k"),
    ({"task": "lens", "params": {"prompt": "a", "colour": 1}}, 400, "no parameter 'colour'"),
    ({"task": "lens", "params": ["a"]}, 400, "JSON object"),
    ({"task": "trace", "params": {"prompt": "Paris is nice", "subject": "Rome"}}, 400, "not in the prompt"),
    ({"task": "trace", "params": {"prompt": "Paris", "subject": "Paris", "kinds": "mlp"}}, 400, "list"),
    ({"task": "edit", "params": {"prompt": "Paris is", "subject": "Paris", "target": " x"}}, 400, "template"),
    ({"task": "lens", "params": {"prompt": "a" * 3000}}, 400, "longer than"),
])
def test_bad_jobs_are_refused_with_a_message(client, body, status, message):
    r = client.post("/api/jobs", json=body)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert client.get("/api/jobs").json() == []  # nothing was queued


def test_bad_bodies_and_limits(client):
    json_type = {"content-type": "application/json"}
    assert client.post("/api/jobs", content=b"{not json", headers=json_type).status_code == 400
    big = client.post("/api/jobs", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "limited" in big.json()["error"]

    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    assert client.post("/api/jobs", content=chunks(), headers=json_type).status_code == 413  # counted


def test_a_failing_job_leaves_the_server_healthy(client):
    evs = run_job(client, "lesion", prompt=PROMPT, layer=99)
    assert evs[-1]["type"] == "failed" and "out of range" in evs[-1]["message"]
    assert "Traceback" not in evs[-1]["message"]
    assert client.get("/api/health").json()["ok"]
    assert run_job(client, "lens", prompt=PROMPT)[-1]["type"] == "done"
    jobs = client.get("/api/jobs").json()
    assert [j["state"] for j in jobs] == ["failed", "done"] and jobs[0]["error"]


def test_the_lens_view_switches_readouts(client, lm, store_dir):
    from lmscope.model.readout import TunedLens, lens_path

    evs = run_job(client, "lens", prompt=PROMPT, readout="tuned")
    assert evs[-1]["type"] == "failed" and "no tuned lens" in evs[-1]["message"]
    assert run_job(client, "lens", prompt=PROMPT)[2]["view"]["key"]["readout"] == "logit lens"
    TunedLens.identity(lm).save(lens_path(lm))
    assert run_job(client, "lens", prompt=PROMPT)[2]["view"]["key"]["readout"] == "logit lens"  # the default
    view = run_job(client, "lens", prompt=PROMPT, readout="auto")[2]["view"]  # the store's tuned lens now
    assert view["key"]["readout"] == "tuned lens" and view["title"].startswith("Tuned lens")
    assert run_job(client, "lens", prompt=PROMPT, readout="logit")[2]["view"]["key"]["readout"] == "logit lens"


def test_cancel_a_running_and_a_queued_job(client):
    long = client.post("/api/jobs", json={"task": "trace", "params": {
        "prompt": PROMPT * 3, "subject": "The Eiffel Tower", "samples": 10}}).json()
    queued = client.post("/api/jobs", json={"task": "lens", "params": {"prompt": PROMPT}}).json()
    assert client.delete(f"/api/jobs/{queued['id']}").status_code == 202
    for _ in range(600):  # wait until the trace reports progress, then cancel it
        detail = client.get(f"/api/jobs/{long['id']}").json()
        if detail["progress"]:
            break
        time.sleep(0.05)
    assert client.delete(f"/api/jobs/{long['id']}").status_code == 202
    assert events(client, long["id"])[-1]["type"] == "cancelled"
    assert events(client, queued["id"])[-1]["type"] == "cancelled"
    assert client.delete(f"/api/jobs/{long['id']}").status_code == 409
    assert run_job(client, "lens", prompt=PROMPT)[-1]["type"] == "done"  # the worker goes on


def test_unknown_things_are_404_and_missing_parameters_400(client):
    assert client.get("/api/jobs/j999").status_code == 404
    assert client.delete("/api/jobs/j999").status_code == 404
    assert client.get("/api/jobs/j999/events").status_code == 404
    assert client.get("/api/view", params={"run": "0/nothing"}).status_code == 404
    assert client.get("/api/view", params={"run": "7/x"}).status_code == 404
    assert client.get("/api/view", params={"run": "root"}).status_code == 404
    assert client.get("/api/view").status_code == 400
    assert client.get("/api/file", params={"run": "0/x"}).status_code == 400
    assert client.get("/api/feature", params={"run": "0/x", "feature": "one"}).status_code == 400
    assert client.get("/api/nothing").status_code == 404


def test_files_never_leave_the_result_directories(client, results, tmp_path):
    run_id = run_job(client, "lens", prompt=PROMPT)[-1]["run"]
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    folder = results / run_id.split("/", 1)[1]
    os.symlink(secret, folder / "link.json")  # a symlinked file pointing out
    os.symlink(tmp_path, results / "escape")  # a symlinked folder pointing out
    for name in ("../../secret.txt", "..%2F..%2Fsecret.txt", str(secret), "link.json", "/etc/passwd",
                 "result/../../../secret.txt"):
        r = client.get("/api/file", params={"run": run_id, "name": name})
        assert r.status_code == 404 and "secret" not in r.text.replace("secret.txt", ""), name
    for run in ("0/..", "0/../..", "0/%2e%2e", "0//etc", "0/escape", f"0/{tmp_path}"):
        r = client.get("/api/view", params={"run": run})
        assert r.status_code == 404, run
    raw = client.get(f"/api/file?run={run_id}&name=%2e%2e%2f%2e%2e%2fsecret.txt")  # encoded in the URL itself
    assert raw.status_code == 404
    assert all(not r["id"].startswith("0/escape") for r in client.get("/api/runs").json())


def test_a_corrupt_run_gets_a_message(client, results):
    bad = results / "broken" / "result"
    bad.mkdir(parents=True)
    (bad / "cfg.json").write_text('{"kind": "LogitLensResult", "format": 1, "model": ')
    assert any(r["id"] == "0/broken" for r in client.get("/api/runs").json())
    r = client.get("/api/view", params={"run": "0/broken"})
    assert r.status_code == 400 and "corrupt" in r.json()["error"]
    assert client.get("/api/health").json()["ok"]


def _feature_runs(results):
    page = {"feature": 7, "density": 0.01, "max": 2.0, "top_token": " Paris",
            "top": [{"tokens": ["The", " city", " of", " Paris"], "values": [0.0, 0.1, 0.2, 2.0], "max_index": 3}],
            "quantiles": [{"bin_min": 0.0, "bin_max": 1.0, "bin_contains": 3,
                           "examples": [{"tokens": ["in", " France"], "values": [0.0, 0.5], "max_index": 1}]}],
            "histogram": {"heights": [3.0, 1.0], "edges": [0.0, 1.0, 2.0]},
            "logits": {"positive": [[" Paris", 0.9], [" Lyon", 0.5]], "negative": [[" the", -0.3]]}}
    other = {**page, "feature": 9, "top_token": " dog", "logits": {"positive": [[" cat", 0.4]], "negative": []}}
    FeatureExamples("m", "resid_post.3", 16, 100, torch.zeros(16), [page, other]).save(results / "f" / "result")
    records = [{"key": "sae-7", "kind": "sae", "unit": 7, "explanation": "French cities", "score": 0.42,
                "detection": 0.8, "malformed": 0}]
    AutointerpResult("m", {"sae": "resid_post.3"}, records, "e", "s").save(results / "ai" / "result")


def test_features_search_and_page(client, results):
    _feature_runs(results)
    hits = client.get("/api/features", params={"q": "french"}).json()
    assert [h["feature"] for h in hits] == [7] and hits[0]["explanation"] == "French cities"
    assert [h["feature"] for h in client.get("/api/features", params={"q": "cat"}).json()] == [9]  # raised token
    assert len(client.get("/api/features").json()) == 2
    page = client.get("/api/feature", params={"run": hits[0]["run"], "feature": 7}).json()
    assert page["score"] == 0.42 and page["top"][0]["tokens"][-1] == " Paris" and page["histogram"]["heights"]
    assert client.get("/api/feature", params={"run": hits[0]["run"], "feature": 8}).status_code == 404
    assert client.get("/api/feature", params={"run": "0/ai", "feature": 7}).status_code == 404
    assert client.get("/api/view", params={"run": "0/ai"}).json()["kind"] == "AutointerpResult"  # generic view


def test_trace_dataset_runs_get_heat_maps_and_edit_folders_are_runs(client, results, lm):
    from lmscope.methods.trace import GROUPS, TraceDatasetResult

    aie = {k: torch.rand(len(GROUPS), lm.n_layers) for k in ("hidden", "mlp")}
    TraceDatasetResult("m", 10, 8, list(GROUPS), aie, [8] * len(GROUPS), 0.3, 0.5, 0.2).save(
        results / "known" / "result")
    view = client.get("/api/view", params={"run": "0/known"}).json()
    assert [b["type"] for b in view["blocks"]] == ["heatmap", "heatmap"] and view["key"]["traced"] == 8
    assert torch.allclose(torch.tensor(view["blocks"][1]["values"]), aie["mlp"])
    assert "AIE" in view["blocks"][0]["hover"][2][1]
    evs = run_job(client, "edit", prompt="{} is located in", subject="The Eiffel Tower", target=" Rome",
                  mom2_adjustment=False, v_steps=2, layer=1, max_new_tokens=2)
    run_job(client, "undo")
    edit_run = evs[-1]["run"]
    (results / "cli-edit").mkdir()
    load_result(results / edit_run.split("/", 1)[1] / "result").save(results / "cli-edit" / "edit")  # `edit`'s layout
    kinds = {r["id"]: r["kind"] for r in client.get("/api/runs").json()}
    assert kinds["0/cli-edit"] == "RomeEdit" and kinds[edit_run] == "RomeEdit"


# bounds and cancel (the security review's findings 4 and 5) ----------------------------------------------------


@pytest.mark.parametrize("task, params, message", [
    ("trace", {"prompt": PROMPT, "subject": "The Eiffel Tower", "samples": 10**9}, "samples must be in 1..1,000"),
    ("lens", {"prompt": PROMPT, "top_k": 10**12}, "top-k must be in 1..100"),
    ("edit", {"prompt": "{} is in", "subject": "Rome", "target": " Paris", "context_lengths": [100_000]}, "1..64"),
    ("edit", {"prompt": "{} is in", "subject": "Rome", "target": " Paris", "kl_prompt": "{} " + "x" * 60_000},
     "at most 64 tokens"),
    ("edit", {"prompt": "{} is in", "subject": "Rome", "target": " Paris", "kl_prompt": "{} is" + " a" * 80},
     "kl-prompt is 82 tokens long"),
    ("lens", {"prompt": " word" * 300}, "300 tokens long"),
    ("generate", {"prompt": PROMPT, "max_new_tokens": 10_000}, "max_new_tokens must be in 1..64"),
    ("generate", {"prompt": PROMPT, "max_new_tokens": 0}, "max_new_tokens must be in 1..64"),
])
def test_every_parameter_is_bounded_in_tokens_and_numbers(client, task, params, message):
    r = client.post("/api/jobs", json={"task": task, "params": params})
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert client.get("/api/jobs").json() == []


def test_the_form_shows_the_bounds_the_cli_checks(client, capsys):
    tasks = {t["name"]: {p["name"]: p for p in t["params"]} for t in client.get("/api/tasks").json()}
    assert tasks["trace"]["samples"]["max"] == 1000 and tasks["trace"]["samples"]["limits"] == "1..1,000"
    assert tasks["lens"]["prompt"]["max_tokens"] == 256 and tasks["edit"]["kl_prompt"]["max_tokens"] == 64
    assert tasks["edit"]["context_lengths"]["max_items"] == 8
    with pytest.raises(SystemExit):
        main(["trace", "run", "--help"])  # the same metadata writes the command line's help ...
    assert "(default: 10; 1..1,000)" in " ".join(capsys.readouterr().out.split())
    assert main(["trace", "x", "--subject", "x", "--samples", "1000000000"]) == 2  # ... and checks it there
    assert "samples must be in 1..1,000" in capsys.readouterr().err


@pytest.fixture
def slow_blocks(lm):
    """Every block of the tiny model takes 0.3 s: any task runs for seconds, long enough to be cancelled."""
    handles = [b.register_forward_pre_hook(lambda m, a: time.sleep(0.3)) for b in lm.layout.blocks]
    yield
    for h in handles:
        h.remove()


@pytest.mark.parametrize("task, params", [
    ("lens", {"prompt": PROMPT}), ("lesion", {"prompt": PROMPT, "layer": 1}), ("neurons", {"prompt": PROMPT}),
    ("trace", {"prompt": PROMPT, "subject": "The Eiffel Tower", "samples": 2}),
    ("edit", {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target": " Rome", "layer": 1,
              "mom2_adjustment": False, "v_steps": 5}),
    ("generate", {"prompt": PROMPT, "max_new_tokens": 30}),
])
def test_every_job_kind_reports_progress_and_stops_within_a_second_of_a_cancel(client, slow_blocks, task, params):
    job = client.post("/api/jobs", json={"task": task, "params": params}).json()
    for _ in range(200):
        detail = client.get(f"/api/jobs/{job['id']}").json()
        if detail["state"] == "running" and detail["progress"]:
            break
        time.sleep(0.02)
    assert detail["progress"]["desc"], detail
    time.sleep(0.4)  # inside the task's own work
    asked = time.monotonic()
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 202
    final = events(client, job["id"])[-1]
    assert final["type"] == "cancelled" and final["time"] - time.time() + time.monotonic() - asked < 1.0
    assert client.get("/api/model").json()["edited"] == []  # a cancelled edit leaves the weights alone


def test_whitespace_tokens_are_drawn_visibly():
    from lmscope.web.views import visible

    assert [visible(t) for t in ("\n", " ", "  ", "\t", "", " Paris", "a\nb", "\n\n")] == [
        "↵", "␣", "␣␣", "⇥", "∅", " Paris", "a↵b", "↵↵"]
