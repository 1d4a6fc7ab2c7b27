"""A trained SAE on disk: lmscope's folder (cfg.json + sae.safetensors), and SAELens' and sparsify's layouts.

lmscope's own folder keeps the architecture (a tied dictionary stays tied) with any input normalisation folded
into the weights (a tied one keeps its scale as a tensor, as W_enc = W_dec^T must hold); ``format="saelens"``
writes the folder SAELens loads (cfg.json + sae_weights.safetensors; a tied SAE becomes a "standard" one, a
BatchTopK one a "jumprelu" one with its threshold for every latent). :func:`load_sae` reads all three, checking
every shape. No pickle.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from lmscope.errors import ArtifactError, LmscopeError
from lmscope.io import load_tensors, read_json, save_tensors, write_json
from lmscope.methods.sae.arch import SparseAutoencoder, build_sae
from lmscope.methods.sae.config import SaeConfig
from lmscope.methods.sae.registry import classes
from lmscope.model.sites import Site

FORMAT = 1
WEIGHTS = "sae.safetensors"
SAELENS_WEIGHTS = "sae_weights.safetensors"


def save_sae(sae: SparseAutoencoder, path: str | Path, *, site: str = "", model: str = "",
             format: str = "lmscope", extra: dict | None = None) -> Path:  # noqa: A002
    """Save ``sae`` as a folder in lmscope's layout or, with ``format="saelens"``, in SAELens'."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    weights = sae.weights()
    if format == "saelens":
        return _save_saelens(sae, weights, folder, site, model)
    if format != "lmscope":
        raise ArtifactError(f"unknown SAE format {format!r}: lmscope or saelens")
    if sae.keeps_input_scale:  # e.g. tied: W_enc = W_dec^T must hold, so the scale stays a separate tensor
        weights["input_scale"] = sae.input_scale.detach().clone()
    else:  # folded: the saved weights read and write the model's own activations
        weights = {**_folded(sae, weights), "input_scale": torch.ones(())}
    save_tensors(folder / WEIGHTS, weights)
    write_json(folder / "cfg.json", {"kind": "SAE", "format": FORMAT, "site": site, "model": model,
                                     "config": asdict(sae.cfg), **(extra or {})})
    return folder


def _folded(sae: SparseAutoencoder, weights: dict) -> dict:
    """Weights with the input scale folded in: the SAE then reads and writes the model's own activations."""
    s = float(sae.input_scale)
    return {**weights, "W_enc": weights["W_enc"] * s, "W_dec": weights["W_dec"] / s, "b_dec": weights["b_dec"] / s,
            **({"threshold": weights["threshold"]} if "threshold" in weights else {})}


def _save_saelens(sae, weights, folder: Path, site: str, model: str) -> Path:
    if sae.saelens_architecture is None:
        raise ArtifactError(f"SAELens has no architecture for a {sae.name!r} SAE; save it in lmscope's format")
    weights, extra = sae.saelens_export(_folded(sae, weights))
    parsed = _site(site)
    hook = (parsed.tl_name or site) if parsed is not None else site  # SAELens reads TransformerLens hook names
    cfg = {"architecture": sae.saelens_architecture, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32",
           "device": "cpu", "model_name": model, "hook_name": hook, "hook_layer": parsed.layer if parsed else 0,
           "apply_b_dec_to_input": sae.applies_b_dec_to_input, "normalize_activations": "none",
           "metadata": {"model_name": model, "hook_name": hook}, **extra}
    save_tensors(folder / SAELENS_WEIGHTS, weights)
    write_json(folder / "cfg.json", cfg)
    return folder


def _check_shapes(tensors: dict, d_in: int, d_sae: int, where: Path) -> None:
    want = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in want.items():
        if name not in tensors:
            raise ArtifactError(f"{where}: tensor {name} is missing")
        if tuple(tensors[name].shape) != shape:
            raise ArtifactError(f"{where}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")


def _build(cfg: SaeConfig, tensors: dict, where: Path) -> SparseAutoencoder:
    _check_shapes(tensors, cfg.d_in, cfg.d_sae, where)
    sae = build_sae(cfg)
    sae.load_weights(tensors)
    if "input_scale" in tensors:
        sae.input_scale.copy_(tensors["input_scale"].reshape(()))
    return sae.eval()


def _from_saelens(folder: Path) -> tuple[SparseAutoencoder, dict]:
    cfg = read_json(folder / "cfg.json")
    tensors = load_tensors(folder / SAELENS_WEIGHTS)
    arch = cfg.get("architecture", "standard")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    _check_shapes(tensors, d_in, d_sae, folder)
    if not cfg.get("apply_b_dec_to_input", True):  # x W_enc + b_enc == (x - b_dec) W_enc + (b_enc + b_dec W_enc)
        tensors["b_enc"] = tensors["b_enc"] + tensors["b_dec"] @ tensors["W_enc"]
    sae_cfg = next((c for c in (cls.from_saelens(arch, cfg, tensors, d_in, d_sae) for cls in classes())
                    if c is not None), None)
    if sae_cfg is None:
        raise ArtifactError(f"{folder}: SAELens architecture {arch!r} is not supported (standard, topk, and jumprelu "
                            "/ batchtopk with one threshold for all latents are)")
    return _build(sae_cfg, tensors, folder), {"site": cfg.get("hook_name", ""), "model": cfg.get("model_name", "")}


def _from_sparsify(folder: Path) -> tuple[SparseAutoencoder, dict]:
    cfg = read_json(folder / "cfg.json")
    raw = load_tensors(folder / WEIGHTS)
    if "encoder.weight" not in raw:
        raise ArtifactError(f"{folder}: no encoder.weight: not a sparsify SAE")
    d_sae, d_in = raw["encoder.weight"].shape
    tensors = {"W_enc": raw["encoder.weight"].T.contiguous(), "b_enc": raw["encoder.bias"], "W_dec": raw["W_dec"],
               "b_dec": raw["b_dec"]}
    sae_cfg = SaeConfig("topk", d_in=int(cfg.get("d_in", d_in)), width=d_sae, k=int(cfg.get("k", 32)))
    return _build(sae_cfg, tensors, folder), {"site": folder.name, "model": ""}


def load_sae(path: str | Path, with_meta: bool = False):
    """The SAE of an lmscope, SAELens or sparsify folder, carrying where it reads.

    ``sae.site`` (a :class:`lmscope.Site`, or None when the folder names none lmscope can read), ``sae.model`` (the
    model it was trained on, '' when unknown) and ``sae.meta`` (every other field of the folder's cfg.json).
    ``with_meta=True`` gives the older ``(sae, meta)`` pair.
    """
    folder = Path(path)
    if (folder / SAELENS_WEIGHTS).is_file():
        sae, meta = _from_saelens(folder)
    else:
        cfg = read_json(folder / "cfg.json")
        if cfg.get("kind") != "SAE":
            sae, meta = _from_sparsify(folder)
        else:
            tensors = load_tensors(folder / WEIGHTS)
            meta = {k: v for k, v in cfg.items() if k not in ("config", "kind", "format")}
            sae = _build(SaeConfig(**cfg["config"]), tensors, folder)
    sae.site, sae.model, sae.meta = _site(meta.get("site")), meta.get("model") or "", meta
    return (sae, meta) if with_meta else sae


def _site(name) -> Site | None:
    try:
        return Site.parse(name) if name else None
    except LmscopeError:
        return None


def is_sae_folder(path: str | Path) -> bool:
    """Whether ``path`` holds an SAE in any supported layout."""
    folder = Path(path)
    return (folder / "cfg.json").is_file() and ((folder / WEIGHTS).is_file() or (folder / SAELENS_WEIGHTS).is_file())


__all__ = ["is_sae_folder", "load_sae", "save_sae"]
