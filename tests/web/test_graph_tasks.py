"""The workbench's attribution graphs: built from the page over the served transcoders, a feature clamped and the
prompt rerun, the explanation and top contexts of a graph's features on hover; and what it refuses."""

from __future__ import annotations

import pytest
import torch
from starlette.testclient import TestClient

from lmscope.cli.graphs import load_transcoders
from lmscope.methods.graphs import clamp, intervene
from lmscope.methods.sae.features import FeatureExamples
from lmscope.web import create_app
from lmscope.web.security import Security
from lmscope.web.tasks import Workbench
from tests.cli.test_graph_cli import transcoders
from tests.helpers import tiny_lm
from tests.web.test_api import TOKEN, run_job

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def served(lm, tmp_path_factory):
    folder = transcoders(tmp_path_factory.mktemp("tc"))
    return load_transcoders(folder, lm), str(folder)


def _client(lm, results, coders=None, source=""):
    bench = Workbench(lm, results / "serve", transcoders=coders or {}, transcoder_source=source)
    security = Security.launch(token=TOKEN, allow_hosts=["testserver"])
    return TestClient(create_app(bench, [results], security),
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})


def test_without_transcoders_the_graph_tasks_are_not_offered(lm, tmp_path):
    with _client(lm, tmp_path) as client:
        names = {t["name"] for t in client.get("/api/tasks").json()}
        assert "graph" not in names and "clamp" not in names
        r = client.post("/api/jobs", json={"task": "graph", "params": {"prompt": PROMPT}})
        assert r.status_code == 400 and "serve --transcoders" in r.json()["error"]


def test_a_graph_from_the_page_then_a_clamp_of_its_top_feature(lm, served, tmp_path):
    coders, source = served
    with _client(lm, tmp_path, coders, source) as client:
        tasks = {t["name"]: t for t in client.get("/api/tasks").json()}
        assert {"graph", "clamp"} <= set(tasks)
        assert any(p["name"] == "node_threshold" and p["default"] == 0.8 for p in tasks["graph"]["params"])
        evs = run_job(client, "graph", prompt=PROMPT, head_loadings=2)
        assert evs[-1]["type"] == "done", evs[-1]
        run = next(e["run"] for e in evs if e["type"] == "run")
        view = client.get("/api/view", params={"run": run}).json()
        block = view["blocks"][0]
        assert block["prompt"] == PROMPT and block["transcoders"] == source
        feats = [n for n in block["nodes"] if n["kind"] == "feature"]
        assert feats and all(isinstance(n["feature"], int) for n in feats)
        # the top feature clamped to 0 on the page moves the top logit as the intervention check measures it
        from lmscope.io import load_result
        graph = load_result(tmp_path / run.split("/", 1)[1] / "result")
        check = intervene(lm, graph, coders, top=1)[0]
        layer, feat, pos = (int(v) for v in check.node.replace("L", "").replace("F", "").replace("@", ".").split("."))
        evs = run_job(client, "clamp", prompt=PROMPT, features=[[layer, pos, feat]], scale=0.0,
                      graph_transcoders=source)
        assert evs[-1]["type"] == "done", evs
        payload = next(e["payload"] for e in evs if e["type"] == "result")
        assert "note" not in payload and payload["features"][0]["set_to"] == 0.0
        top = graph.logit_tokens[0]
        row = next(r for r in payload["logits"] if r["token"] == top)
        assert row["change"] == pytest.approx(check.measured, abs=1e-3)
        # scale 1 changes nothing; another folder's graph is said
        same = run_job(client, "clamp", prompt=PROMPT, features=[[layer, pos, feat]], scale=1.0,
                       graph_transcoders=str(tmp_path / "elsewhere"))
        same = next(e["payload"] for e in same if e["type"] == "result")
        assert all(abs(r["change"]) < 1e-4 for r in same["logits"]) and same["before"] == same["after"]
        assert "elsewhere" in same["note"]


def test_clamp_by_value_turns_an_inactive_feature_on(lm, served):
    coders, _ = served
    ids = lm.tokenize(PROMPT)["input_ids"]
    quiet = next(f for f in range(coders[1].width)
                 if clamp(lm, PROMPT, coders, [(1, ids.shape[1] - 1, f)], scale=0.0).features[0]["activation"] == 0)
    off = clamp(lm, PROMPT, coders, [(1, ids.shape[1] - 1, quiet)], scale=5.0)
    assert all(abs(r["change"]) < 1e-5 for r in off.logits)  # 5 x 0 is still 0
    on = clamp(lm, PROMPT, coders, [(1, ids.shape[1] - 1, quiet)], value=50.0)
    assert on.features[0]["set_to"] == 50.0 and max(abs(r["change"]) for r in on.logits) > 1e-3


@pytest.mark.parametrize("params, fragment", [
    ({"prompt": PROMPT, "features": [[1, 0]]}, "three whole numbers"),
    ({"prompt": PROMPT, "features": [[1, 0, -2]]}, "three whole numbers"),
    ({"prompt": PROMPT, "features": "L1.F2"}, "features must be a list"),
    ({"prompt": PROMPT, "features": [[1, 0, 0]] * 33}, "at most 32"),
    ({"prompt": PROMPT, "features": [[1, 0, 0]], "scale": "big"}, "scale must be a number"),
    ({"prompt": PROMPT, "features": [[1, 0, 0]], "scale": 1e9}, "scale must be in"),
    ({"prompt": PROMPT}, "needs 'features'"),
])
def test_bad_clamps_are_refused_before_they_queue(lm, served, tmp_path, params, fragment):
    coders, source = served
    with _client(lm, tmp_path, coders, source) as client:
        r = client.post("/api/jobs", json={"task": "clamp", "params": params})
        assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_a_feature_out_of_range_fails_the_job_in_one_line(lm, served, tmp_path):
    coders, source = served
    with _client(lm, tmp_path, coders, source) as client:
        evs = run_job(client, "clamp", prompt=PROMPT, features=[[1, 99, 0]])
        assert evs[-1]["type"] == "failed" and "the prompt has" in evs[-1]["message"]
        assert "\n" not in evs[-1]["message"]


def test_graph_nodes_carry_their_feature_pages_on_hover(lm, served, tmp_path):
    coders, source = served
    results = tmp_path
    with _client(lm, results, coders, source) as client:
        run = next(e["run"] for e in run_job(client, "graph", prompt=PROMPT) if e["type"] == "run")
        block = client.get("/api/view", params={"run": run}).json()["blocks"][0]
        node = next(n for n in block["nodes"] if n["kind"] == "feature")
        page = {"feature": node["feature"], "density": 0.01, "max": 2.0, "top_token": " Paris",
                "top": [{"tokens": ["The", " city", " of", " Paris", "."], "values": [0, 0, 0, 2.0, 0],
                         "max_index": 3}], "quantiles": [], "histogram": {"heights": [], "edges": []},
                "logits": {"positive": [], "negative": []}}
        FeatureExamples(lm.name, f"mlp_in.{node['layer']}", 64, 100, torch.zeros(64), [page]).save(
            results / "pages" / "result")
        block = client.get("/api/view", params={"run": run}).json()["blocks"][0]
        noted = next(n for n in block["nodes"] if n["id"] == node["id"])
        assert noted["note"]["contexts"] == ["The city of[[ Paris]]."] and noted["note"]["run"] == "0/pages"
        others = [n for n in block["nodes"] if n["kind"] == "feature" and n["layer"] != node["layer"]]
        assert all("note" not in n for n in others)
