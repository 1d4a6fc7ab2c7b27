"""Tiny random vision-language models of the Hugging Face VLM families, built offline, with inputs made by hand.

Every model is the unmodified ``XForConditionalGeneration`` class on a tiny config; no processor is downloaded:
the inputs hold as many image-token ids as the family's own code expects (``expected_tokens`` asks the model's
``get_image_features``, independently of lmscope's layout). ``local=True`` gives a vision tower with no layers, so
that each image token depends only on the pixels it covers (the probe of the layout tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers as T

from tests.helpers import LLAMA_LIKE, TINY_CONFIGS

IMAGE_TOKEN = 50  # an id of the tiny vocabulary used as the image placeholder
TEXT = [4, 5, 6]  # "The capital of": the text after the image


def _clip() -> T.CLIPVisionConfig:
    return T.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, image_size=28, patch_size=7, projection_dim=16)


def _siglip(local: bool) -> T.SiglipVisionConfig:
    return T.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=0 if local else 2,
                                num_attention_heads=2, image_size=16, patch_size=4)


def llava_next(local: bool = False) -> T.LlavaNextForConditionalGeneration:
    """CLIP on 28 x 28 tiles (4 x 4 patches), anyres pinpoints 28 x 56, 56 x 28, 56 x 56 (height, width)."""
    cfg = T.LlavaNextConfig(vision_config=_clip(), text_config=TINY_CONFIGS["llama"](),
                            image_token_index=IMAGE_TOKEN, image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]],
                            vision_feature_layer=-3 if local else -2)  # -3: the patch embeddings
    return T.LlavaNextForConditionalGeneration(cfg)


def _idefics_like(config_cls, vision_cls, model_cls, local: bool):
    vision = vision_cls(hidden_size=16, intermediate_size=32, num_hidden_layers=0 if local else 2,
                        num_attention_heads=2, image_size=28, patch_size=7)
    cfg = config_cls(vision_config=vision, text_config=TINY_CONFIGS["llama"](), image_token_id=IMAGE_TOKEN,
                     scale_factor=2)
    return model_cls(cfg)


def idefics3(local: bool = False) -> T.Idefics3ForConditionalGeneration:
    """28 x 28 frames (4 x 4 patches), pixel shuffle by 2: 4 tokens a frame."""
    return _idefics_like(T.Idefics3Config, T.Idefics3VisionConfig, T.Idefics3ForConditionalGeneration, local)


def smolvlm(local: bool = False) -> T.SmolVLMForConditionalGeneration:
    """As :func:`idefics3`, on SmolVLM's classes."""
    return _idefics_like(T.SmolVLMConfig, T.SmolVLMVisionConfig, T.SmolVLMForConditionalGeneration, local)


def _qwen_text() -> dict:
    return dict(**LLAMA_LIKE, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})


def qwen2_vl(local: bool = False) -> T.Qwen2VLForConditionalGeneration:
    """4 x 4 pixel patches, 2 x 2 merged into one token, M-RoPE over (t, h, w)."""
    vision = dict(depth=0 if local else 2, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2)
    cfg = T.Qwen2VLConfig(text_config=_qwen_text(), vision_config=vision, image_token_id=IMAGE_TOKEN,
                          vision_start_token_id=51, vision_end_token_id=52, video_token_id=53)
    return T.Qwen2VLForConditionalGeneration(cfg)


def qwen2_5_vl(local: bool = False) -> T.Qwen2_5_VLForConditionalGeneration:
    """As :func:`qwen2_vl`, with windowed vision attention (16-pixel windows: 2 x 2 tokens) and a full block."""
    vision = dict(depth=0 if local else 2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                  patch_size=4, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                  fullatt_block_indexes=[1])
    cfg = T.Qwen2_5_VLConfig(text_config=_qwen_text(), vision_config=vision, image_token_id=IMAGE_TOKEN,
                             vision_start_token_id=51, vision_end_token_id=52, video_token_id=53)
    return T.Qwen2_5_VLForConditionalGeneration(cfg)


def gemma3(local: bool = False) -> T.Gemma3ForConditionalGeneration:
    """SigLIP on 16 x 16 images (4 x 4 patches), average-pooled 2 x 2 into 4 tokens."""
    cfg = T.Gemma3Config(vision_config=_siglip(local), text_config=TINY_CONFIGS["gemma3_text"](),
                         mm_tokens_per_image=4, image_token_index=IMAGE_TOKEN, boi_token_index=51,
                         eoi_token_index=52)
    model = T.Gemma3ForConditionalGeneration(cfg)
    with torch.no_grad():  # Gemma 3 starts its projector at zero: every image would be the same
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.25)
    return model


def paligemma(local: bool = False) -> T.PaliGemmaForConditionalGeneration:
    """SigLIP on 16 x 16 images (4 x 4 patches = 16 tokens), a Gemma decoder with a bidirectional prefix."""
    cfg = T.PaliGemmaConfig(vision_config=_siglip(local), text_config=TINY_CONFIGS["gemma"](),
                            image_token_index=IMAGE_TOKEN, projection_dim=32, hidden_size=32)
    return T.PaliGemmaForConditionalGeneration(cfg)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ids(batch: int, n: int) -> torch.Tensor:
    return torch.tensor([[1] + [IMAGE_TOKEN] * n + TEXT] * batch)  # (batch, 1 + n + 3)


def llava_next_inputs(batch: int = 1, image_size: tuple[int, int] = (12, 56), seed: int = 0) -> dict:
    """An image of ``image_size`` (height, width); 12 x 56 picks the 28 x 56 canvas (1 x 2 tiles) and unpads it:
    16 base tokens + 2 rows of 8 tiles' tokens, each row ended by a newline token."""
    return {"input_ids": _ids(batch, 16 + 2 * 9),
            "pixel_values": torch.randn(batch, 3, 3, 28, 28, generator=_gen(seed)),  # base + 2 tiles
            "image_sizes": torch.tensor([list(image_size)] * batch)}


def idefics_inputs(batch: int = 1, tiles: tuple[int, int] = (1, 2), seed: int = 0) -> dict:
    """``tiles`` rows x cols frames of 28 x 28 pixels plus the global image (or one frame for (0, 0))."""
    frames = tiles[0] * tiles[1] + 1 if tiles != (0, 0) else 1
    return {"input_ids": _ids(batch, 4 * frames),
            "pixel_values": torch.randn(batch, frames, 3, 28, 28, generator=_gen(seed)),
            "pixel_attention_mask": torch.ones(batch, frames, 28, 28, dtype=torch.long)}


def qwen_inputs(batch: int = 1, grid: tuple[int, int] = (4, 6), seed: int = 0) -> dict:
    """One image a row of ``grid`` (height, width) patches of 4 x 4 pixels, 2 x 2 patches a token."""
    n = grid[0] * grid[1] // 4
    ids = _ids(batch, n)
    return {"input_ids": ids, "mm_token_type_ids": (ids == IMAGE_TOKEN).int(),
            "pixel_values": torch.randn(batch * grid[0] * grid[1], 3 * 2 * 4 * 4, generator=_gen(seed)),
            "image_grid_thw": torch.tensor([[1, *grid]] * batch)}


def gemma3_inputs(batch: int = 1, seed: int = 0) -> dict:
    """4 pooled image tokens; ``token_type_ids`` marks them (bidirectional attention among them)."""
    ids = _ids(batch, 4)
    return {"input_ids": ids, "token_type_ids": (ids == IMAGE_TOKEN).long(),
            "pixel_values": torch.randn(batch, 3, 16, 16, generator=_gen(seed))}


def paligemma_inputs(batch: int = 1, seed: int = 0) -> dict:
    """16 image tokens and the prompt, all prefix (``token_type_ids`` 0: attended bidirectionally)."""
    ids = _ids(batch, 16)
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
            "pixel_values": torch.randn(batch, 3, 16, 16, generator=_gen(seed))}


@dataclass(frozen=True)
class Tiny:
    """One family: its builder (``local``), its inputs (``batch``, ``seed``), its decoder's spec name and blocks."""

    name: str
    build: Callable[..., torch.nn.Module]
    inputs: Callable[..., dict]
    spec: str
    decoder: str  # the blocks' path


CASES = {
    "llava_next": Tiny("llava_next", llava_next, llava_next_inputs, "llava_next:llama", "model.language_model.layers"),
    "idefics3": Tiny("idefics3", idefics3, idefics_inputs, "idefics3:llama", "model.text_model.layers"),
    "smolvlm": Tiny("smolvlm", smolvlm, idefics_inputs, "smolvlm:llama", "model.text_model.layers"),
    "qwen2_vl": Tiny("qwen2_vl", qwen2_vl, qwen_inputs, "qwen2_vl:qwen2", "model.language_model.layers"),
    "qwen2_5_vl": Tiny("qwen2_5_vl", qwen2_5_vl, lambda batch=1, seed=0: qwen_inputs(batch, (4, 8), seed),
                       "qwen2_5_vl:qwen2", "model.language_model.layers"),
    "gemma3": Tiny("gemma3", gemma3, gemma3_inputs, "gemma3:gemma3", "model.language_model.layers"),
    "paligemma": Tiny("paligemma", paligemma, paligemma_inputs, "paligemma:gemma", "model.language_model.layers"),
}


def tiny_vlm(name: str, local: bool = False, seed: int = 0) -> torch.nn.Module:
    """The family's tiny random model in eval mode."""
    torch.manual_seed(seed)
    return CASES[name].build(local).eval()


@torch.no_grad()
def expected_tokens(model: torch.nn.Module, inputs: dict) -> int:
    """How many image tokens the model's own ``get_image_features`` gives for ``inputs`` (all rows together)."""
    vision = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_sizes", "image_grid_thw",
                                                         "pixel_attention_mask")}
    out = model.model.get_image_features(**vision, return_dict=True).pooler_output
    if isinstance(out, (list, tuple)):
        return sum(f.reshape(-1, f.shape[-1]).shape[0] for f in out)
    return out.reshape(-1, out.shape[-1]).shape[0]
