"""Training checkpoints: a module and its optimiser, written atomically, reloaded with the parameters' layouts.

One checkpoint is ``<stem>.safetensors`` (the module's tensors as ``<prefix>.<name>``, the optimiser's state as
``adam.<param index>.<name>``, and any extra tensors) beside ``<stem>.json`` (the optimiser's ``param_groups`` and
any extra fields). Both files are written atomically; :func:`checkpoint_folder` makes a folder of several
checkpoints appear all at once, so a kill never leaves half of one. SAE training and the VLM projector's training
both checkpoint through here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from lmscope.io import load_tensors, read_json, replace_folder, save_tensors, write_json


def save_training_state(stem: Path, module: nn.Module, opt: torch.optim.Optimizer, prefix: str = "module",
                        tensors: dict[str, torch.Tensor] | None = None, meta: dict | None = None) -> None:
    """Write ``stem``.safetensors and ``stem``.json: the module, the optimiser, extra tensors and fields."""
    state = opt.state_dict()
    out = {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
    out.update({f"adam.{p}.{k}": torch.as_tensor(v) for p, st in state["state"].items() for k, v in st.items()})
    out.update(tensors or {})
    save_tensors(stem.with_name(stem.name + ".safetensors"), out)
    write_json(stem.with_name(stem.name + ".json"), {**(meta or {}), "param_groups": state["param_groups"]})


def load_training_state(stem: Path, module: nn.Module, opt: torch.optim.Optimizer,
                        prefix: str = "module") -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint into ``module`` and ``opt``; returns (the other tensors, the other fields).

    The optimiser's moments take their parameter's strides (:func:`match_layouts`). A checkpoint written without
    its JSON keeps the optimiser's own ``param_groups``.
    """
    tensors = load_tensors(stem.with_name(stem.name + ".safetensors"))
    json_path = stem.with_name(stem.name + ".json")
    meta = read_json(json_path) if json_path.is_file() else {}
    module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, p, name = key.split(".", 2)
            moments.setdefault(int(p), {})[name] = value
    groups = meta.pop("param_groups", None) or opt.state_dict()["param_groups"]
    opt.load_state_dict({"state": moments, "param_groups": groups})
    match_layouts(opt)
    rest = {k: v for k, v in tensors.items() if not k.startswith((prefix + ".", "adam."))}
    return rest, meta


def match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give reloaded optimiser moments their parameter's strides (a saved tensor comes back contiguous).

    An SAE's W_enc is the clone of a transposed view; PyTorch's fused CPU Adam walks the tensors as flat memory and
    silently pairs the wrong entries when the layouts differ (pytorch/pytorch#106951 is the CUDA side, where it
    raises).
    """
    for param, state in opt.state.items():
        for key, value in state.items():
            if value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param).copy_(value)


@contextmanager
def checkpoint_folder(folder: Path) -> Iterator[Path]:
    """A fresh ``<folder>.tmp`` to write a checkpoint into; on success it replaces ``folder`` as a whole."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    replace_folder(tmp, folder)
