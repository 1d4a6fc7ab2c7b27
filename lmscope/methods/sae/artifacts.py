"""A trained SAE on disk: lmscope's folder (cfg.json + sae.safetensors), and SAELens' and sparsify's layouts.

lmscope's own folder keeps the architecture (a tied dictionary stays tied) with any input normalisation folded
into the weights (a tied one keeps its scale as a tensor, as W_enc = W_dec^T must hold); ``format="saelens"``
writes the folder SAELens loads (cfg.json + sae_weights.safetensors; a tied SAE becomes a "standard" one, a
BatchTopK one a "jumprelu" one with its threshold for every latent). :func:`load_sae` reads all three, checking
every shape, dtype, value and config key; :func:`check_sae` checks an SAE before use against the model and site it
is asked to read (the width of the site, the folder's own site and model, unless forced). No pickle.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from lmscope.errors import ArtifactError, ConfigError, LmscopeError, SiteError
from lmscope.io import load_tensors, read_json, save_tensors, write_json
from lmscope.methods.sae.arch import SparseAutoencoder, build_sae
from lmscope.methods.sae.config import K_DEFAULT, SaeConfig
from lmscope.methods.sae.harvest import check_sites, site_width
from lmscope.methods.sae.registry import classes, sae_class
from lmscope.model.lm import LM
from lmscope.model.loading import REGISTRY
from lmscope.model.sites import Site

FORMAT = 1
WEIGHTS = "sae.safetensors"
SAELENS_WEIGHTS = "sae_weights.safetensors"
CONFIG_KEYS = tuple(f.name for f in fields(SaeConfig))
NEEDED_KEYS = ("architecture", "d_in")  # the others have defaults (older folders may lack newer fields)


def save_sae(sae: SparseAutoencoder, path: str | Path, *, site: str = "", model: str = "",
             format: str = "lmscope", extra: dict | None = None, target: str = "") -> Path:  # noqa: A002
    """Save ``sae`` as a folder in lmscope's layout or, with ``format="saelens"``, in SAELens'.

    ``site``: where it reads; ``target``: where a transcoder writes (both kind.layer); ``model``: its model's name.
    """
    if sae.transcoder and not target and sae.target is not None:
        target = str(sae.target)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    weights = sae.weights()
    if format == "saelens":
        return _save_saelens(sae, weights, folder, site, model, target)
    if format != "lmscope":
        raise ArtifactError(f"unknown SAE format {format!r}: lmscope or saelens")
    if sae.keeps_input_scale:  # e.g. tied: W_enc = W_dec^T must hold, so the scale stays a separate tensor
        weights["input_scale"] = sae.input_scale.detach().clone()
    else:  # folded: the saved weights read and write the model's own activations
        weights = {**_folded(sae, weights), "input_scale": torch.ones(())}
    save_tensors(folder / WEIGHTS, weights)
    write_json(folder / "cfg.json", {"kind": "SAE", "format": FORMAT, "site": site, "model": model,
                                     **({"target": target} if sae.transcoder else {}),
                                     "config": asdict(sae.cfg), **(extra or {})})
    return folder


def folded_weights(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    """The SAE's weights with its input (and output) scale folded in: they read and write raw activations."""
    return _folded(sae, sae.weights())


def _folded(sae: SparseAutoencoder, weights: dict) -> dict:
    """Weights with the input (and a transcoder's output) scale folded in: it reads and writes raw activations.

    Pre-activations are unchanged, so thresholds are too.
    """
    s, t = float(sae.input_scale), float(sae.out_scale)
    folded = {**weights, "W_enc": weights["W_enc"] * s, "W_dec": weights["W_dec"] / t, "b_dec": weights["b_dec"] / t}
    if "W_skip" in weights:
        folded["W_skip"] = weights["W_skip"] * (s / t)
    return folded


SAELENS_VERSION = "6.54.12"  # the SAELens whose layout is written (checked: bench/peers/saelens_reads_lmscope.py)


def _hook(site: str) -> str:
    """A site as SAELens names it: the TransformerLens hook where one is exact, else lmscope's own name."""
    parsed = _site(site)
    return (parsed.tl_name or site) if parsed is not None else site


def _save_saelens(sae, weights, folder: Path, site: str, model: str, target: str) -> Path:
    """SAELens 6's inference layout: hook and model names under "metadata", with the version that says so."""
    arch = sae.saelens_architecture
    if sae.transcoder:
        arch = TRANSCODERS.get((sae.saelens_architecture, bool(sae.cfg.skip)))
    if arch is None:
        what = f"{'skip ' if sae.cfg.skip else ''}transcoder" if sae.transcoder else "SAE"
        raise ArtifactError(f"SAELens has no architecture for a {sae.name!r} {what}; save it in lmscope's format")
    weights, extra = sae.saelens_export(_folded(sae, weights))
    meta = {"sae_lens_version": SAELENS_VERSION, "model_name": model, "hook_name": _hook(site), "hook_head_index": None,
            **({"hook_name_out": _hook(target)} if sae.transcoder else {})}
    cfg = {"architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_sae,
           **({"d_out": sae.d_out} if sae.transcoder else {}),
           "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": sae.centers_input,
           "normalize_activations": "none", "reshape_activations": "none", "metadata": meta,
           **({} if sae.transcoder else extra)}
    save_tensors(folder / SAELENS_WEIGHTS, weights)
    write_json(folder / "cfg.json", cfg)
    return folder


# SAELens' transcoder architectures: (the dictionary's own SAELens architecture, skip) -> the transcoder's
TRANSCODERS = {("standard", False): "transcoder", ("standard", True): "skip_transcoder",
               ("jumprelu", False): "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder"}


def _kind(value) -> str:
    """A JSON value's kind, for messages: 'a list', 'a string', 'null'."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _read_cfg(folder: Path) -> dict:
    """The folder's cfg.json, which must be a JSON object."""
    cfg = read_json(folder / "cfg.json")
    if not isinstance(cfg, dict):
        raise ArtifactError(f"{folder / 'cfg.json'} holds {_kind(cfg)}, not an object: not an SAE config")
    return cfg


def _int(cfg: dict, key: str, where: Path, what: str, default=None) -> int:
    """A whole-number field of a cfg.json (one line when it is missing or not a whole number >= 0)."""
    value = cfg.get(key, default)
    if value is None:
        raise ArtifactError(f"{where / 'cfg.json'} has no {key} ({what})")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArtifactError(f"{where / 'cfg.json'}: {key} must be a whole number >= 0, got {value!r}")
    return value


def _sae_config(raw, where: Path) -> SaeConfig:
    """The ``config`` object of an lmscope cfg.json as a SaeConfig: every key known, the needed ones given."""
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where / 'cfg.json'}: 'config' is {_kind(raw)}, not an object")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise ArtifactError(f"{where / 'cfg.json'}: unknown key {unknown[0]!r} in 'config' (known: "
                            f"{', '.join(CONFIG_KEYS)}); the folder was not written by this lmscope, or was edited")
    missing = [k for k in NEEDED_KEYS if k not in raw]
    if missing:
        raise ArtifactError(f"{where / 'cfg.json'}: 'config' has no {missing[0]}")
    return _config(where, **raw)


def _config(where: Path, *args, **kwargs) -> SaeConfig:
    """SaeConfig(...) of a folder's values; its checks' errors name the folder."""
    try:
        return SaeConfig(*args, **kwargs)
    except ConfigError as err:
        raise ArtifactError(f"{where / 'cfg.json'}: {err}") from err
    except TypeError as err:  # a value of the wrong type that a check compares (e.g. a string momentum)
        raise ArtifactError(f"{where / 'cfg.json'}: a value of the config has the wrong type ({err})") from err


def _check_tensors(tensors: dict, where: str | Path) -> None:
    """Every tensor of the file is floating point and finite (one line naming the first that is not)."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ArtifactError(f"{where}: tensor {name} is {t.dtype}; SAE weights must be floating point (float32, "
                                "float16 or bfloat16): the file is corrupt or not an SAE's")
        bad = t.numel() - int(torch.isfinite(t).sum())
        if bad:
            raise ArtifactError(f"{where}: tensor {name} holds {bad} of {t.numel()} values that are not finite (NaN "
                                "or inf): the SAE is corrupt (did its training diverge?)")
    scale = tensors.get("input_scale")
    if scale is not None and (scale.numel() != 1 or float(scale) <= 0):
        raise ArtifactError(f"{where}: tensor input_scale must be one number > 0, got {scale.flatten()[:4].tolist()}")


def _check_shapes(tensors: dict, d_in: int, d_sae: int, where: Path, d_out: int = 0, skip: bool = False) -> None:
    d_out = d_out or d_in
    want = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_out,),
            **({"W_skip": (d_out, d_in)} if skip else {})}
    for name, shape in want.items():
        if name not in tensors:
            raise ArtifactError(f"{where}: tensor {name} is missing")
        if tuple(tensors[name].shape) != shape:
            raise ArtifactError(f"{where}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")


def _build(cfg: SaeConfig, tensors: dict, where: Path, checked: bool = False) -> SparseAutoencoder:
    if not checked:
        _check_tensors(tensors, where)
    _check_shapes(tensors, cfg.d_in, cfg.d_sae, where, cfg.out_width, cfg.skip)
    sae = build_sae(cfg)
    sae.load_weights(tensors)
    if "input_scale" in tensors:
        sae.input_scale.copy_(tensors["input_scale"].reshape(()))
    return sae.eval()


def _fold_saelens_scales(cfg: dict, tensors: dict, folder: Path) -> None:
    """Fold what SAELens applies outside the weights into them, exactly; refuse what cannot be folded.

    TopK's ``rescale_acts_by_decoder_norm`` (pre-activations times each decoder row's norm, codes divided by it
    when decoding) folds as SAELens' own ``_fold_norm_topk``: W_enc, b_enc times the norms, W_dec divided. A
    training checkpoint's ``expected_average_only_in`` scale (``activation_scaler.json``) folds as SAELens'
    ``fold_activation_norm_scaling_factor``. Per-token normalisations (``constant_norm_rescale``, ``layer_norm``)
    and whitening are refused, with the field named.
    """
    if cfg.get("rescale_acts_by_decoder_norm"):
        if cfg.get("architecture", "standard") != "topk":
            raise ArtifactError(f"{folder / 'cfg.json'}: rescale_acts_by_decoder_norm is true for a "
                                f"{cfg.get('architecture')!r} SAE; lmscope folds it only for topk")
        norms = tensors["W_dec"].norm(dim=-1).clamp_min(1e-8)  # (d_sae,)
        tensors.update(W_enc=tensors["W_enc"] * norms, b_enc=tensors["b_enc"] * norms,
                       W_dec=tensors["W_dec"] / norms[:, None])
    mode = cfg.get("normalize_activations") or "none"
    if mode == "expected_average_only_in":
        scale = _scaler(folder)
        tensors.update(W_enc=tensors["W_enc"] * scale, W_dec=tensors["W_dec"] / scale, b_dec=tensors["b_dec"] / scale)
    elif mode != "none":
        raise ArtifactError(f"{folder / 'cfg.json'}: normalize_activations is {mode!r} (a per-token normalisation "
                            "SAELens applies around the weights); lmscope reads 'none' and 'expected_average_only_in'")


def _scaler(folder: Path) -> float:
    """The constant input scale of a SAELens training checkpoint (activation_scaler.json), or one clear error."""
    path = folder / "activation_scaler.json"
    if not path.is_file():
        raise ArtifactError(f"{folder / 'cfg.json'}: normalize_activations is 'expected_average_only_in' but the "
                            "folder has no activation_scaler.json (the scale SAELens multiplies inputs by): without it "
                            "the codes would be other ones; give the folder SAELens saved at the end of training")
    raw = read_json(path)
    value = raw.get("scaling_factor") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and raw.get("has_whitening"):
        raise ArtifactError(f"{path}: the SAE was trained on whitened activations; lmscope does not read whitening")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ArtifactError(f"{path}: scaling_factor must be a number > 0, got {value!r}")
    return float(value)


SAELENS_TRANSCODERS = {name: key for key, name in TRANSCODERS.items()}  # SAELens transcoder -> (architecture, skip)


def _move_input_shift(tensors: dict, into_encoder: bool) -> None:
    """Move the subtraction of b_dec from the input between a folder's convention and lmscope's, exactly.

    lmscope's autoencoders encode x - b_dec, its transcoders x. ``into_encoder``: a folder that encodes x, read as an
    autoencoder (x W + b == (x - b_dec) W + (b + b_dec W)); else a folder that encodes x - b_dec, read as a
    transcoder (b - b_dec W). Every encoder path moves: a gated SAE's magnitude path reads W exp(r_mag).
    """
    sign = 1.0 if into_encoder else -1.0
    tensors["b_enc"] = tensors["b_enc"] + sign * tensors["b_dec"] @ tensors["W_enc"]
    if "r_mag" in tensors:
        tensors["b_mag"] = tensors["b_mag"] + sign * tensors["b_dec"] @ (tensors["W_enc"] * tensors["r_mag"].exp())


def _from_saelens(folder: Path) -> tuple[SparseAutoencoder, dict]:
    cfg = _read_cfg(folder)
    tensors = load_tensors(folder / SAELENS_WEIGHTS)
    arch = cfg.get("architecture", "standard")
    arch, skip = SAELENS_TRANSCODERS.get(arch, (arch, None))
    d_in = _int(cfg, "d_in", folder, "SAELens' input width: the folder is incomplete")
    d_sae = _int(cfg, "d_sae", folder, "SAELens' dictionary size: the folder is incomplete")
    d_out = _int(cfg, "d_out", folder, "a transcoder's output width: the folder is incomplete") if skip is not None \
        else 0
    sae_cfg = _saelens_config(arch, cfg, tensors, d_in, d_sae, folder)
    tensors = sae_class(sae_cfg.architecture).saelens_import(tensors)  # SAELens' names -> lmscope's
    _check_tensors(tensors, folder)
    _check_shapes(tensors, d_in, d_sae, folder, d_out, bool(skip))
    _fold_saelens_scales(cfg, tensors, folder)
    centers = cfg.get("apply_b_dec_to_input", True)
    if skip is not None and centers:  # SAELens refuses it too: a transcoder's b_dec is in the output space
        raise ArtifactError(f"{folder / 'cfg.json'}: apply_b_dec_to_input is true for a transcoder")
    if skip is None and not centers:
        _move_input_shift(tensors, into_encoder=True)
    if skip is not None:
        sae_cfg = _config(folder, **{**asdict(sae_cfg), "transcoder": True, "skip": skip, "d_out": d_out})
    sae = _build(sae_cfg, tensors, folder, checked=True)
    return sae, _saelens_meta(cfg, folder)


def _saelens_config(arch: str, cfg: dict, tensors: dict, d_in: int, d_sae: int, folder: Path) -> SaeConfig:
    """The SaeConfig of the first registered class that reads SAELens architecture ``arch``."""
    try:
        sae_cfg = next((c for c in (cls.from_saelens(arch, cfg, tensors, d_in, d_sae) for cls in classes())
                        if c is not None), None)
    except ConfigError as err:
        raise ArtifactError(f"{folder / 'cfg.json'}: {err}") from err
    except (TypeError, ValueError, AttributeError) as err:  # a field of the wrong type (e.g. k: "many")
        raise ArtifactError(f"{folder / 'cfg.json'}: a field of the {arch!r} SAE has the wrong type ({err})") from err
    if sae_cfg is None:
        raise ArtifactError(f"{folder}: SAELens architecture {arch!r} is not supported (standard, topk, jumprelu and "
                            "BatchTopK / Matryoshka saved as jumprelu, and the transcoders "
                            f"{', '.join(SAELENS_TRANSCODERS)} are)")
    return sae_cfg


def _saelens_meta(cfg: dict, folder: Path) -> dict:
    """Where a SAELens SAE reads: SAELens 6 keeps hook_name / model_name under "metadata", older folders at the top.

    An SAE of one attention head (hook_head_index) is refused: lmscope's attn_heads site is every head at once.
    """
    block = cfg.get("metadata")
    block = block if isinstance(block, dict) else {}
    def field(key: str) -> str:
        value = block.get(key) or cfg.get(key) or ""
        return value if isinstance(value, str) else ""
    head = block.get("hook_head_index", cfg.get("hook_head_index"))
    if head is not None:
        raise ArtifactError(f"{folder / 'cfg.json'}: hook_head_index is {head!r} (an SAE of one attention head); "
                            "lmscope reads SAEs of a whole site, not one head's slice of it")
    site = _hf_site(field("hf_hook_name")) or field("hook_name")
    meta = {"site": site, "model": field("model_name")}
    if "d_out" in cfg:  # a transcoder: where it writes
        meta["target"] = _hf_site(field("hf_hook_name_out")) or field("hook_name_out")
    return meta


def _hf_site(name: str) -> str:
    """The lmscope site of a Hugging Face module path SAELens records (Gemma Scope 2: ``hf_hook_name``), or ''.

    Exact where TransformerLens' names are not: TransformerLens' ``ln2.hook_normalized`` and ``hook_mlp_in`` are the
    MLP input without the norm's weight, lmscope's ``mlp_in`` (``pre_feedforward_layernorm.output``) with it.
    """
    match = re.fullmatch(r"model\.(?:language_model\.)?layers\.(\d+)\.(.+)", name or "")
    if not match:
        return ""
    kind = {"output": "resid_post", "pre_feedforward_layernorm.output": "mlp_in", "mlp.input": "mlp_in",
            "post_feedforward_layernorm.output": "mlp_out", "self_attn.o_proj.input": "attn_heads",
            "mlp.down_proj.input": "mlp_key"}.get(match.group(2))
    return f"{kind}.{match.group(1)}" if kind else ""


def _from_sparsify(folder: Path, cfg: dict) -> tuple[SparseAutoencoder, dict]:
    """A sparsify (EleutherAI) coder: TopK SAE, transcoder or skip transcoder, read as sparsify 1.3 computes it.

    encode: TopK of ReLU((x - b_dec) W_enc^T + b_enc), without the b_dec shift when ``transcode``; output
    z W_dec + b_dec (+ x W_skip^T with ``skip_connection``). A skip connection makes it a transcoder even without
    ``transcode`` (sparsify's first skip transcoders predate the field and subtract b_dec: folded into b_enc).
    """
    raw = load_tensors(folder / WEIGHTS)
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in raw]
    if missing:
        raise ArtifactError(f"{folder}: no {missing[0]} in {WEIGHTS}: not a sparsify SAE (and its cfg.json has no "
                            "kind 'SAE': not an lmscope one)")
    _refuse_sparsify(cfg, folder)
    _check_tensors(raw, folder)
    if raw["encoder.weight"].ndim != 2:
        raise ArtifactError(f"{folder}: encoder.weight has shape {tuple(raw['encoder.weight'].shape)}, expected "
                            "(d_sae, d_in)")
    d_sae, d_in = raw["encoder.weight"].shape
    skip, shifted = bool(cfg.get("skip_connection")), not cfg.get("transcode")
    transcoder = skip or not shifted
    tensors = {"W_enc": raw["encoder.weight"].T.contiguous(), "b_enc": raw["encoder.bias"], "W_dec": raw["W_dec"],
               "b_dec": raw["b_dec"], **({"W_skip": raw["W_skip"]} if "W_skip" in raw else {})}
    _check_shapes(tensors, d_in, d_sae, folder, d_in, skip)
    if transcoder and shifted:
        _move_input_shift(tensors, into_encoder=False)
    sae_cfg = _config(folder, "topk", d_in=_int(cfg, "d_in", folder, "input width", d_in), width=d_sae,
                      k=_int(cfg, "k", folder, "active latents", K_DEFAULT), transcoder=transcoder, skip=skip)
    return _build(sae_cfg, tensors, folder, checked=True), _sparsify_sites(folder.name, transcoder)


def _refuse_sparsify(cfg: dict, folder: Path) -> None:
    """Refuse sparsify settings lmscope does not compute (groupmax, the old signed codes), never approximate them."""
    if cfg.get("activation", "topk") != "topk":
        raise ArtifactError(f"{folder / 'cfg.json'}: activation is {cfg.get('activation')!r}; lmscope reads sparsify's "
                            "topk coders only")
    if cfg.get("signed"):
        raise ArtifactError(f"{folder / 'cfg.json'}: signed is true (top-k by |pre-activation|, no ReLU: sparsify "
                            "before August 2024); lmscope does not read signed coders")


def _sparsify_sites(hookpoint: str, transcoder: bool) -> dict:
    """Where a sparsify coder reads (and writes), from its folder's name, the hookpoint.

    ``layers.3`` or ``layers.3.mlp``; '' where the name says nothing lmscope knows (the caller gives --site).
    """
    match = re.fullmatch(r"(?:model\.)?(?:layers|h|blocks)\.(\d+)(?:\.(mlp|self_attn|attn))?", hookpoint)
    if not match:
        return {"site": "", "model": "", **({"target": ""} if transcoder else {})}
    layer, module = match.group(1), match.group(2)
    if transcoder:  # a transcoder reads the MLP's input and predicts its output
        return {"site": f"mlp_in.{layer}" if module == "mlp" else "", "model": "",
                "target": f"mlp_out.{layer}" if module == "mlp" else ""}
    kind = {None: "resid_post", "mlp": "mlp_out", "self_attn": "attn_out", "attn": "attn_out"}[module]
    return {"site": f"{kind}.{layer}", "model": ""}


GEMMA_SCOPE_FILES = ("params.safetensors", "params.npz")  # Gemma Scope 2's and Gemma Scope 1's parameter files


def _from_gemma_scope(folder: Path) -> tuple[SparseAutoencoder, dict]:
    """A Gemma Scope (params.npz) or Gemma Scope 2 (params.safetensors [+ config.json]) folder, as Google ships it.

    JumpReLU: codes = pre H(pre - threshold), pre = x w_enc + b_enc (b_dec not subtracted: folded into b_enc for an
    SAE; a transcoder's b_dec is its output bias); output codes w_dec + b_dec (+ x affine_skip_connection, a
    skip transcoder). The site comes from config.json's hf_hook_point_in / _out, else from the folder's path
    (``resid_post/layer_12_...``, ``transcoder_all/layer_5_..._affine``, ``gemma-scope-2b-pt-res/layer_20/...``).
    """
    raw = _gemma_scope_tensors(folder)
    missing = [k for k in ("w_enc", "w_dec", "b_enc", "b_dec", "threshold") if k not in raw]
    if missing:
        raise ArtifactError(f"{folder}: no {missing[0]} in its parameter file: not a Gemma Scope SAE")
    _check_tensors(raw, folder)
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if cfg.get("architecture", "jump_relu") != "jump_relu":
        raise ArtifactError(f"{folder / 'config.json'}: architecture is {cfg.get('architecture')!r}; Gemma Scope "
                            "SAEs are jump_relu")
    (d_in, d_sae), d_out = raw["w_enc"].shape, raw["w_dec"].shape[-1]
    meta = _gemma_scope_sites(folder, cfg)
    if meta.get("embedding"):
        raise ArtifactError(f"{folder}: a Gemma Scope SAE of the embeddings (read scaled by sqrt(d_model) in "
                            "SAELens); lmscope does not read it")
    transcoder = "target" in meta or "affine_skip_connection" in raw or d_out != d_in
    tensors = {"W_enc": raw["w_enc"], "b_enc": raw["b_enc"], "W_dec": raw["w_dec"], "b_dec": raw["b_dec"],
               "threshold": raw["threshold"]}
    if "affine_skip_connection" in raw:  # (d_in, d_out), added as x A: W_skip = A^T
        tensors["W_skip"] = raw["affine_skip_connection"].T.contiguous()
    _check_shapes(tensors, d_in, d_sae, folder, d_out, "W_skip" in tensors)
    if not transcoder:
        _move_input_shift(tensors, into_encoder=True)
    sae_cfg = _config(folder, "jumprelu", d_in=d_in, width=d_sae, transcoder=transcoder, skip="W_skip" in tensors,
                      d_out=d_out if transcoder else 0)
    return _build(sae_cfg, tensors, folder, checked=True), meta


def _gemma_scope_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The parameters of params.safetensors, or of params.npz read without pickle (lower-cased names)."""
    if (folder / "params.safetensors").is_file():
        return {k.lower(): v for k, v in load_tensors(folder / "params.safetensors").items()}
    import numpy as np

    try:
        with np.load(folder / "params.npz", allow_pickle=False) as npz:
            return {k.lower(): torch.from_numpy(np.asarray(npz[k], dtype=np.float32)) for k in npz.files}
    except (ValueError, OSError) as err:
        raise ArtifactError(f"{folder / 'params.npz'}: not a readable NumPy archive of arrays ({err})") from err


def _gemma_scope_sites(folder: Path, cfg: dict) -> dict:
    """{site, model[, target]} of a Gemma Scope folder: config.json's Hugging Face hook points, else its path."""
    path = "/".join(folder.resolve().parts[-4:]).lower()
    layer = re.search(r"layer_(\d+)", path)
    hf_in, hf_out = cfg.get("hf_hook_point_in"), cfg.get("hf_hook_point_out")
    model = cfg.get("model_name") or ""
    repo = re.search(r"gemma-scope(-2)?-(\w+?)-(pt|it)", path)
    if not model and repo:
        plain = repo.group(3) == "pt" and (not repo.group(1) or repo.group(2) == "270m")  # hub ids without -pt
        model = f"google/gemma-{'3' if repo.group(1) else '2'}-{repo.group(2)}" + ("" if plain else f"-{repo.group(3)}")
    kind = next((k for k, words in (("transcoder", ("transcoder", "clt")), ("resid_post", ("resid_post", "-res")),
                                    ("attn_heads", ("attn_out", "-att")), ("mlp_out", ("mlp_out", "-mlp")),
                                    ("embedding", ("embedding",)))
                 if any(w in path for w in words)), "")
    meta = {"site": _hf_site(hf_in or ""), "model": model}
    if kind == "embedding":
        return {**meta, "embedding": True}
    if not meta["site"] and layer and kind:
        meta["site"] = f"mlp_in.{layer.group(1)}" if kind == "transcoder" else f"{kind}.{layer.group(1)}"
    if kind == "transcoder" or hf_out:
        meta["target"] = _hf_site(hf_out or "") or (f"mlp_out.{layer.group(1)}" if layer else "")
    return meta


def _from_lmscope(folder: Path, cfg: dict) -> tuple[SparseAutoencoder, dict]:
    version = cfg.get("format", FORMAT)
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT:
        raise ArtifactError(f"{folder / 'cfg.json'}: format {version!r} is not one this lmscope reads (<= {FORMAT}): "
                            "the folder was written by a newer lmscope, or is corrupt")
    if "config" not in cfg:
        raise ArtifactError(f"{folder / 'cfg.json'} says kind SAE but has no 'config' object (the dictionary's "
                            "architecture and size)")
    sae_cfg = _sae_config(cfg["config"], folder)
    sae = _build(sae_cfg, load_tensors(folder / WEIGHTS), folder)
    return sae, {k: v for k, v in cfg.items() if k not in ("config", "kind", "format")}


def load_sae(path: str | Path, with_meta: bool = False):
    """The SAE of an lmscope, SAELens or sparsify folder, carrying where it reads.

    ``sae.site`` (a :class:`lmscope.Site`, or None when the folder names none lmscope can read), ``sae.model`` (the
    model it was trained on, '' when unknown), ``sae.meta`` (every other field of the folder's cfg.json) and
    ``sae.path``. ``with_meta=True`` gives the older ``(sae, meta)`` pair. A folder whose config has an unknown key or
    a value out of range, or whose weights are not finite floating-point tensors of the shapes the config gives, is
    one :class:`ArtifactError` naming the field or tensor.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(f"SAE folder {folder} does not exist" if not folder.exists() else
                            f"{folder} is a file; give an SAE folder (cfg.json + weights)")
    if (folder / SAELENS_WEIGHTS).is_file():
        sae, meta = _from_saelens(folder)
    elif any((folder / name).is_file() for name in GEMMA_SCOPE_FILES):
        sae, meta = _from_gemma_scope(folder)
    else:
        cfg = _read_cfg(folder)
        sae, meta = _from_lmscope(folder, cfg) if cfg.get("kind") == "SAE" else _from_sparsify(folder, cfg)
    model = meta.get("model")
    sae.site, sae.meta, sae.path = _site(meta.get("site")), meta, str(folder)
    sae.target = _site(meta.get("target")) if sae.transcoder else None
    sae.model = model if isinstance(model, str) else ""
    return (sae, meta) if with_meta else sae


# ---- before use: the SAE against the model and site it is asked to read -------------------------------------------
def _name(sae: SparseAutoencoder) -> str:
    return f"the SAE in {sae.path}" if sae.path else f"the {sae.name} SAE"


def _check_weights(sae: SparseAutoencoder) -> None:
    """The SAE's tensors are finite floating point, its input scale > 0 and k <= d_sae (one line otherwise)."""
    names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "input_scale")
    tensors = {k: getattr(sae, k).detach() for k in names if isinstance(getattr(sae, k, None), torch.Tensor)}
    _check_tensors(tensors, _name(sae))
    try:
        sae.cfg.check_k()
    except ConfigError as err:
        raise ArtifactError(f"{_name(sae)}: {err}") from err


def _comparable(name: str) -> str:
    """A model name reduced for comparison: last path part, lower case, no GGUF quantisation suffix or punctuation.

    ``google/gemma-3-270m`` and ``gemma3-270m`` compare equal.
    """
    name = name.rstrip("/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"[.-](q\d\w*|iq\d\w*|f16|f32|bf16|gguf)$", "", name)
    return re.sub(r"[^a-z0-9]", "", name)


def _aliases(name: str) -> set[str]:
    names = {name}
    for entry in REGISTRY.values():
        if {_comparable(entry.name), _comparable(entry.hub_id)} & {_comparable(name)}:
            names |= {entry.name, entry.hub_id}
    return {_comparable(n) for n in names}


def same_model(a: str, b: str) -> bool:
    """Whether two model names (a bundled name, a hub id, a folder or GGUF name) say the same model."""
    return bool(_aliases(a) & _aliases(b))


def _same_site(a: Site, b: Site, lm: LM | None) -> bool:
    if lm is not None:
        return lm.check(a) == lm.check(b)
    return a == b or (a.layer < 0) != (b.layer < 0)  # a negative layer is known once the model is


def _chosen_site(sae: SparseAutoencoder, asked: Site | None, force: bool, lm: LM | None) -> Site:
    """The folder's site; ``asked`` where it names none (or, forced, instead of it)."""
    own = sae.site
    if own is None:
        if asked is not None:
            return asked
        named = sae.meta.get("site")
        if named:
            raise SiteError(f"{_name(sae)} names its site {named!r}, which is not an lmscope site (kind.layer) or a "
                            "TransformerLens hook name lmscope reads; give --site")
        raise SiteError(f"{_name(sae)} names no site; give --site (kind.layer, e.g. resid_post.3)")
    if asked is None or _same_site(own, asked, lm) or force:
        return own if asked is None else asked
    raise ArtifactError(f"{_name(sae)} was trained at {own}, not {asked}: --site only fills in for a folder that "
                        f"names no site; leave it out, or pass --force to use the SAE at {asked} anyway")


def check_sae(sae: SparseAutoencoder, lm: LM | None = None, site: Site | str | None = None, *,
              force: bool = False) -> Site:
    """Check ``sae`` before it is used; returns the site it reads (one line naming what is wrong otherwise).

    Without the model (before it loads): finite floating-point weights, k <= d_sae, and the site: the folder's own,
    ``site`` where the folder names none; a ``site`` other than the folder's is refused unless ``force``. With
    ``lm``: the site exists in it and is ``d_in`` wide, and the folder's model (when it names one) is ``lm``
    (refused unless ``force``; a wrong width never is allowed: the SAE cannot read it).
    """
    asked = Site.parse(site) if isinstance(site, str) else site
    _check_weights(sae)
    chosen = _chosen_site(sae, asked, force, lm)
    check_sites([chosen])
    if lm is None:
        return chosen
    chosen = lm.check(chosen)
    if sae.model and not force and not same_model(sae.model, lm.name):
        raise ArtifactError(f"{_name(sae)} was trained on {sae.model!r}, not {lm.name!r}; pass --force to use it "
                            "with this model anyway")
    width = site_width(lm, chosen)
    if width != sae.d_in:
        raise ArtifactError(f"{_name(sae)} reads d_in {sae.d_in} activations, but {chosen} of {lm.name} is {width} "
                            "wide: it belongs to another model or site")
    return chosen


def check_target(sae: SparseAutoencoder, lm: LM | None = None) -> Site | None:
    """Where a transcoder writes; None for an autoencoder.

    The folder's target, checked against ``lm`` when given: it exists and is d_out wide.
    """
    if not sae.transcoder:
        return None
    if sae.target is None:
        named = sae.meta.get("target")
        raise SiteError(f"{_name(sae)} is a transcoder whose target site "
                        + (f"{named!r} is not one lmscope reads" if named else "is not named") +
                        " (where it writes: mlp_out.LAYER); its folder's cfg.json must name it")
    check_sites([sae.target])
    if lm is None:
        return sae.target
    target = lm.check(sae.target)
    width = site_width(lm, target)
    if width != sae.d_out:
        raise ArtifactError(f"{_name(sae)} writes d_out {sae.d_out} activations, but {target} of {lm.name} is {width} "
                            "wide: it belongs to another model")
    return target


def _site(name) -> Site | None:
    try:
        return Site.parse(name) if name else None
    except LmscopeError:
        return None


def is_sae_folder(path: str | Path) -> bool:
    """Whether ``path`` holds an SAE in any supported layout."""
    folder = Path(path)
    return any((folder / name).is_file() for name in GEMMA_SCOPE_FILES) or \
        ((folder / "cfg.json").is_file() and ((folder / WEIGHTS).is_file() or (folder / SAELENS_WEIGHTS).is_file()))


__all__ = ["check_sae", "check_target", "folded_weights", "is_sae_folder", "load_sae", "same_model", "save_sae"]
