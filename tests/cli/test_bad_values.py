"""Every command against the generic bad values, driven by the command table and the config dataclasses.

For each command: every numeric config field just outside its declared bounds, and every path argument given as a
missing path, a directory, an empty file and a binary file. Each must be exit 2, one line on stderr (the last,
``lmscope COMMAND: error: ...``), no traceback, and no ``--out`` folder left behind. The commands get a tiny local
model and otherwise valid arguments (``VALID``), so that the value under test is what is refused.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

import lmscope
from lmscope.cli import build_parser, main
from lmscope.cli.graphs import load_transcoders
from lmscope.cli.registry import COMMANDS
from lmscope.cli.table import ENTRIES
from lmscope.methods.graphs import GraphConfig, attribution_graph
from tests.helpers import tiny_model, tiny_tokenizer

PROMPT = "The Eiffel Tower is located in the city of"


def valid(entry, paths: dict[str, Path]) -> list[str]:
    """Arguments that make the command's other inputs acceptable."""
    return {
        "lens": [PROMPT], "trace": [PROMPT, "--subject", "The Eiffel Tower"], "lesion": [PROMPT, "--layer", "1"],
        "neurons": [PROMPT], "edit": ["--prompt", "{} is located in", "--subject", "The Eiffel Tower", "--target",
                                      " Rome"],
        "neuron-edit": ["--layer", "1", "--neuron", "1", "--v0", "Paris", "--v1", "Rome", "--prompt", PROMPT],
        "stats": ["--layer", "1"], "trace-dataset": ["--data", str(paths["facts"])],
        "eval-edits": ["--data", str(paths["facts"])], "sae-harvest": ["--sites", "resid_post.1"],
        "sae-train": ["--sites", "resid_post.1"], "sae-eval": [str(paths["sae"])], "sae-features": [str(paths["sae"])],
        "patch": ["--clean", "The capital of France is", "--corrupted", "The capital of Spain is", "--answer", "Paris"],
        "ioi-features": ["--data", str(paths["ioi"]), "--layer", "1"], "autointerp": ["--layer", "1"],
        "info": [], "train-projector": [], "stages": [], "graph": [PROMPT, "--transcoders", str(paths["transcoders"])],
        "lens-import": [str(paths["folder"])], "graph-eval": ["--transcoders", str(paths["transcoders"])],
        "graph-check": [str(paths["graph"]), "--transcoders", str(paths["transcoders"])],
        "autointerp-report": [str(paths["folder"])],
    }.get(entry.name, [])


PATH_OPTIONS = {"trace-dataset": ["--data"], "eval-edits": ["--data"], "ioi-features": ["--data", "--sae"],
                "autointerp": ["--sae", "--prompts", "--corpus"], "sae-eval": ["sae"], "sae-features": ["sae"],
                "sae-harvest": ["--corpus"], "sae-train": ["--corpus", "--cache"], "neurons": ["--image"],
                "stages": ["--corpus"], "stats": ["--corpus"], "graph": ["--transcoders"], "lens-train": ["--corpus"],
                "lens-eval": ["--corpus", "--lens"], "lens-import": ["folder"],
                "graph-eval": ["--transcoders", "--corpus"], "graph-check": ["graph", "--transcoders"],
                "autointerp-report": ["run"]}
SKIP = {"serve", "models"}  # serve listens (its inputs: tests/web/test_security.py); models takes no input
ENTRY_NAMES = [e.name for e in ENTRIES if e.name not in SKIP]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from lmscope.methods.sae import SaeConfig, build_sae, save_sae

    root = tmp_path_factory.mktemp("bad")
    facts = root / "facts.json"
    facts.write_text(json.dumps([{"prompt": "{} is in", "subject": "Paris", "attribute": "France"}]))
    ioi = root / "ioi.json"
    ioi.write_text(json.dumps([{"prompt": "When Mary and John went to the store, John gave a drink to",
                                "answer": " Mary"}]))
    save_sae(build_sae(SaeConfig("topk", d_in=32, ratio=2, k=4)), root / "sae", site="resid_post.1")
    save_sae(build_sae(SaeConfig("topk", d_in=32, ratio=2, k=4, transcoder=True)), root / "tc" / "mlp_in.1",
             site="mlp_in.1", target="mlp_out.1")
    model = root / "tiny-llama"  # the graph of the same tiny model as tiny_llama_dir, under the same name
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    lm = lmscope.load(str(model))
    coders = load_transcoders(root / "tc", lm)
    attribution_graph(lm, PROMPT, coders, GraphConfig(), source=str(root / "tc")).save(root / "graph" / "result")
    (root / "empty.txt").write_text("")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (root / "a-folder").mkdir()
    return {"facts": facts, "ioi": ioi, "sae": root / "sae", "empty": root / "empty.txt",
            "binary": root / "binary.bin", "folder": root / "a-folder", "missing": root / "missing",
            "transcoders": root / "tc", "graph": root / "graph"}


def bounded_fields() -> list[tuple[str, str, str]]:
    """(command, --flag, value) for every numeric config field just outside its declared bounds."""
    build_parser()  # every command registered
    cases = []
    for name in ENTRY_NAMES:
        for cls in COMMANDS[name].configs:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                base = typing.get_origin(hints[f.name]) or hints[f.name]
                if base not in (int, float):
                    continue
                flag = "--" + f.name.replace("_", "-")
                if f.metadata.get("min") is not None:
                    cases.append((name, flag, str(f.metadata["min"] - 1)))
                if f.metadata.get("max") is not None:
                    cases.append((name, flag, str(f.metadata["max"] * 10 + 1)))
    return cases


def refused(argv: list[str], out: Path, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (argv, err)
    assert "Traceback" not in err and lines and ": error: " in lines[-1], (argv, err)
    assert not out.exists(), (argv, sorted(p.name for p in out.rglob("*")))
    return lines[-1]


@pytest.mark.parametrize("name, flag, value", bounded_fields())
def test_values_outside_the_declared_bounds(name, flag, value, tiny_llama_dir, files, tmp_path, capsys):
    entry = next(e for e in ENTRIES if e.name == name)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_llama_dir), *entry.path, *valid(entry, files), flag, value]
    message = refused([*argv, "--out", str(out)] if COMMANDS[name].out else argv, out, capsys)
    assert flag[2:] in message or flag[2:].replace("-", "_") in message, message


@pytest.mark.parametrize("name, option, kind", [(n, o, k) for n, opts in PATH_OPTIONS.items() for o in opts
                                                for k in ("missing", "folder", "empty", "binary")])
def test_bad_paths(name, option, kind, tiny_llama_dir, files, tmp_path, capsys):
    entry = next(e for e in ENTRIES if e.name == name)
    out = tmp_path / "out"
    args = valid(entry, files)
    if option.startswith("--"):
        if option in args:
            i = args.index(option)
            args = args[:i] + args[i + 2:]
        args = [*args, option, str(files[kind])]
    else:  # a positional path: the first argument
        args = [str(files[kind]), *args[1:]]
    if option == "--prompts" and kind == "folder":
        return  # an empty prompts folder is refused as "holds none of the prompt files": covered by "empty"
    argv = ["--model", str(tiny_llama_dir), *entry.path, *args]
    refused([*argv, "--out", str(out)] if COMMANDS[name].out else argv, out, capsys)
