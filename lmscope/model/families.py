"""Family specs: where embeddings, blocks, attention, MLP, W_in / W_out, final norm and W_U live.

One small declarative :class:`FamilySpec` per architecture, chosen by ``config.model_type``. For an unknown
family :func:`infer_spec` finds the parts structurally and raises :class:`FamilySpecError`, naming the field to
supply, whenever it cannot be sure. Nothing is ever guessed silently.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from torch import nn

from lmscope.errors import FamilySpecError
from lmscope.model.weights import is_linear, linear_dims

log = logging.getLogger(__name__)

NORM_WORDS = ("norm", "ln")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "o")  # how attention output projections are named


@dataclass(frozen=True)
class FamilySpec:
    """Module paths of one architecture. Root paths start at the model; block paths start at one block.

    ``attn_out`` / ``mlp_out`` name the module whose output is what the block adds to the residual stream
    (default: the attention / MLP module itself; Gemma 2/3 pass both through a norm first).
    """

    name: str
    embed: str  # root: token embedding module (output = token embeddings, before any position embedding)
    blocks: str  # root: the ModuleList of transformer blocks
    final_norm: str  # root: the norm applied before the unembedding
    unembed: str  # root: W_U (lm_head)
    attn: str  # block: attention module (output[0] = attention output)
    mlp: str  # block: the MLP
    mlp_in: str  # block: W_in, the gate projection for gated MLPs; its output is the pre-activation
    mlp_out_proj: str  # block: W_out; its input is the MLP key (hidden activation)
    mlp_up: str | None = None  # block: the up projection of gated MLPs
    attn_out_proj: str | None = None  # block: attention output projection; its input is the heads' outputs
    attn_out: str | None = None  # block: module whose output is added to the residual, if not ``attn``
    mlp_out: str | None = None  # block: likewise for the MLP
    parallel: bool | str = False  # attention and MLP both read h^{l-1}; or the config attribute that says so
    logit_softcap: str | None = None  # config attribute holding a final logit soft-cap, if any

    def replace(self, **changes: object) -> FamilySpec:
        """A copy with some fields changed (e.g. to fix one field of an inferred spec)."""
        return dataclasses.replace(self, **changes)


_LLAMA = FamilySpec(
    name="llama", embed="model.embed_tokens", blocks="model.layers", final_norm="model.norm",
    unembed="lm_head", attn="self_attn", mlp="mlp", mlp_in="mlp.gate_proj", mlp_up="mlp.up_proj",
    mlp_out_proj="mlp.down_proj", attn_out_proj="self_attn.o_proj",
)
_GEMMA2 = _LLAMA.replace(
    name="gemma2", attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm",
    logit_softcap="final_logit_softcapping",
)
_GPT2 = FamilySpec(
    name="gpt2", embed="transformer.wte", blocks="transformer.h", final_norm="transformer.ln_f",
    unembed="lm_head", attn="attn", mlp="mlp", mlp_in="mlp.c_fc", mlp_out_proj="mlp.c_proj",
    attn_out_proj="attn.c_proj",
)
_GPT_NEOX = FamilySpec(
    name="gpt_neox", embed="gpt_neox.embed_in", blocks="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head", attn="attention", mlp="mlp", mlp_in="mlp.dense_h_to_4h", mlp_out_proj="mlp.dense_4h_to_h",
    attn_out_proj="attention.dense", parallel="use_parallel_residual",
)
_GPTJ = _GPT2.replace(name="gptj", mlp_in="mlp.fc_in", mlp_out_proj="mlp.fc_out", attn_out_proj="attn.out_proj",
                      parallel=True)
_PHI = FamilySpec(
    name="phi", embed="model.embed_tokens", blocks="model.layers", final_norm="model.final_layernorm",
    unembed="lm_head", attn="self_attn", mlp="mlp", mlp_in="mlp.fc1", mlp_out_proj="mlp.fc2",
    attn_out_proj="self_attn.dense", parallel=True,
)

#: ``config.model_type`` -> spec. Add a family by adding one line here (and a tiny config to the tests).
FAMILIES: dict[str, FamilySpec] = {
    "llama": _LLAMA,
    "mistral": _LLAMA.replace(name="mistral"),
    "qwen2": _LLAMA.replace(name="qwen2"),
    "qwen3": _LLAMA.replace(name="qwen3"),
    "gemma": _LLAMA.replace(name="gemma"),
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2.replace(name="gemma3"),
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
    "gptj": _GPTJ,
    "phi": _PHI,
}


#: A vision-language model's text ``model_type`` that is no text family of its own -> the family its decoder is.
VLM_TEXT_FAMILIES: dict[str, str] = {
    "qwen2_vl_text": "qwen2",  # Qwen2-VL: a Qwen2 decoder with M-RoPE (the rotary embedding is no module we read)
    "qwen2_5_vl_text": "qwen2",
}
#: Where vision-language models keep their decoder (LLaVA, LLaVA-NeXT, Qwen2-VL, Gemma 3, PaliGemma; Idefics3,
#: SmolVLM; older LLaVA checkpoints).
DECODER_PATHS = ("model.language_model", "model.text_model", "language_model.model", "language_model")


def language_model_spec(model: nn.Module) -> FamilySpec | None:
    """The spec of a vision-language model's decoder (``model.language_model`` or ``model.text_model`` + ``lm_head``).

    The text family (by the text config's ``model_type``, through :data:`VLM_TEXT_FAMILIES` where it has its own
    name) has its root paths moved under the decoder (``model.embed_tokens`` -> ``model.language_model.embed_tokens``);
    block paths are unchanged. None when ``model`` is not such a model.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "text_config", None) is None:
        return None
    text_type = getattr(config.get_text_config(), "model_type", None)
    text = FAMILIES.get(VLM_TEXT_FAMILIES.get(text_type, text_type))
    inner = next((p for p in DECODER_PATHS
                  if _has(model, p) and not isinstance(model.get_submodule(p), nn.Linear)), None)
    if text is None or inner is None:
        return None

    def moved(path: str) -> str:
        return f"{inner}.{path.split('.', 1)[1]}"
    head = "lm_head" if _has(model, "lm_head") else "language_model.lm_head"
    return text.replace(name=f"{config.model_type}:{text.name}", embed=moved(text.embed), blocks=moved(text.blocks),
                        final_norm=moved(text.final_norm), unembed=head)


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def spec_for(model: nn.Module) -> FamilySpec:
    """The registered spec for ``model.config.model_type``, a vision-language model's decoder, or the fallback.

    The structural fallback is logged loudly.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    vlm = language_model_spec(model)
    if vlm is not None:
        return vlm
    spec = infer_spec(model)
    log.warning("no family spec for model_type %r; inferred structurally: %s. Pass spec=... to override.",
                model_type, spec)
    return spec


def _named_children(module: nn.Module) -> dict[str, nn.Module]:
    return dict(module.named_children())


def _one(candidates: list[str], field: str, what: str) -> str:
    if len(candidates) != 1:
        raise FamilySpecError(
            f"structural fallback: cannot determine `{field}` ({what}); found {candidates or 'none'}. "
            f"Pass lmscope.FamilySpec(..., {field}='...') to lmscope.load(spec=...)."
        )
    return candidates[0]


def _path_of(model: nn.Module, target: nn.Module | None, field: str) -> str:
    for name, module in model.named_modules():
        if module is target and name:
            return name
    raise FamilySpecError(f"structural fallback: cannot find `{field}` in the module tree; pass it in a FamilySpec")


def _find_blocks(model: nn.Module, n_layers: int | None) -> str:
    lists = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    return _one(lists, "blocks", f"the one ModuleList of length num_hidden_layers={n_layers}")


def _find_final_norm(model: nn.Module, blocks: str) -> str:
    parent = model.get_submodule(blocks.rpartition(".")[0]) if "." in blocks else model
    prefix = blocks.rpartition(".")[0]
    norms = [f"{prefix}.{n}".lstrip(".") for n, m in _named_children(parent).items()
             if any(w in n.lower() for w in NORM_WORDS) and not _named_children(m)]
    return _one(norms, "final_norm", "a norm module beside the block list")


def _find_mlp_parts(mlp: nn.Module, mlp_name: str, d_model: int) -> dict[str, str | None]:
    linears = {n: linear_dims(m) for n, m in mlp.named_modules() if n and is_linear(m)}
    outs = [n for n, (i, o) in linears.items() if o == d_model and i != d_model]
    ins = [n for n, (i, o) in linears.items() if i == d_model and o != d_model]
    w_out = _one(outs, "mlp_out_proj", "the MLP linear mapping d_mlp -> d_model")
    gate = [n for n in ins if "gate" in n]
    if len(ins) == 2 and len(gate) == 1:
        up = [n for n in ins if n != gate[0]][0]
        return {"mlp_in": f"{mlp_name}.{gate[0]}", "mlp_up": f"{mlp_name}.{up}",
                "mlp_out_proj": f"{mlp_name}.{w_out}"}
    w_in = _one(ins, "mlp_in", "the MLP linear mapping d_model -> d_mlp (gate projection if gated)")
    return {"mlp_in": f"{mlp_name}.{w_in}", "mlp_up": None, "mlp_out_proj": f"{mlp_name}.{w_out}"}


def _find_block_parts(block: nn.Module, d_model: int) -> dict[str, str | None]:
    children = _named_children(block)
    norms = [n for n, m in children.items() if any(w in n.lower() for w in NORM_WORDS) and not _named_children(m)]
    if len(norms) > 2:
        raise FamilySpecError(
            f"structural fallback: the block has {len(norms)} norms ({norms}); it may normalise the attention/MLP "
            "outputs before the residual add. Pass a FamilySpec with `attn_out` and `mlp_out`."
        )
    weighted = [n for n, m in children.items() if n not in norms and any(True for _ in m.parameters())]
    attn = _one([n for n in weighted if "attn" in n.lower() or "attention" in n.lower()], "attn",
                "the attention submodule of a block (with weights)")
    mlp = _one([n for n in children if n.lower() in ("mlp", "feed_forward", "ffn", "ff")], "mlp",
               "the MLP submodule of a block")
    return {"attn": attn, "mlp": mlp, "attn_out_proj": _find_attn_out_proj(children[attn], attn, d_model),
            **_find_mlp_parts(children[mlp], mlp, d_model)}


def _find_attn_out_proj(attn: nn.Module, attn_name: str, d_model: int) -> str | None:
    """The attention's output projection (a linear into d_model named like one), or None: no ``attn_heads`` site."""
    names = [n for n, m in attn.named_modules() if n and is_linear(m) and linear_dims(m)[1] == d_model
             and n.rpartition(".")[2] in OUT_PROJ_NAMES]
    return f"{attn_name}.{names[0]}" if len(names) == 1 else None


def infer_spec(model: nn.Module) -> FamilySpec:
    """Find the parts of an unknown architecture structurally; raise :class:`FamilySpecError` if unsure."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_layers = getattr(config, "num_hidden_layers", None)
    d_model = getattr(config, "hidden_size", None)
    if n_layers is None or d_model is None:
        raise FamilySpecError("structural fallback needs config.num_hidden_layers and config.hidden_size")
    blocks = _find_blocks(model, n_layers)
    parts = _find_block_parts(model.get_submodule(blocks)[0], d_model)
    return FamilySpec(
        name=f"inferred:{getattr(config, 'model_type', type(model).__name__)}",
        embed=_path_of(model, model.get_input_embeddings(), "embed"),
        blocks=blocks,
        final_norm=_find_final_norm(model, blocks),
        unembed=_path_of(model, model.get_output_embeddings(), "unembed"),
        parallel=getattr(config, "use_parallel_residual", False),
        **parts,
    )
