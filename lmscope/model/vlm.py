"""A LLaVA-style vision-language model assembled from parts: a vision encoder, a projector, a decoder LM.

The result is an unmodified Hugging Face ``LlavaForConditionalGeneration`` with its ``LlavaProcessor``: the image
enters the decoder as a block of image tokens (one per patch), each the projector's image of one patch feature.
The bundled ``smollm2-dino`` is DINOv2-S/14 (:mod:`lmscope.model.vision`) -> an MLP projector trained here ->
SmolLM2-135M, on 112 x 112 images (8 x 8 = 64 patches), the image token being SmolLM2's unused ``<empty_output>``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmscope.errors import ConfigError
from lmscope.model.vision import IMAGE_MEAN, IMAGE_STD

IMAGE_TOKEN = "<empty_output>"  # id 16 of SmolLM2's vocabulary: a special token that text never holds
CAPTION_PROMPT = (f"<|im_start|>user\nImage: {IMAGE_TOKEN}\nName the object in the image.<|im_end|>\n"
                  "<|im_start|>assistant\nIt is")  # SmolLM2-Instruct's chat format; the caption follows
PROJECTORS = ("linear", "mlp")


def build_llava(text_dir: str | Path, vision_dir: str | Path, projector: str = "linear", image_size: int = 112,
                image_token: str = IMAGE_TOKEN, dtype: torch.dtype = torch.float32):
    """(LlavaForConditionalGeneration, LlavaProcessor) from a causal LM folder and a vision encoder folder.

    The decoder's and the encoder's weights are copied in unchanged; the projector starts at random (``linear``: a
    linear map, Schwettmann et al. / LiMBeR, as linear_2(linear_1(x)) with an identity activation; ``mlp``: LLaVA-1.5's
    Linear-GELU-Linear).
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoTokenizer,
        BitImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    if projector not in PROJECTORS:
        raise ConfigError(f"projector must be one of {', '.join(PROJECTORS)}, got {projector!r}")
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    token_id = tokenizer.convert_tokens_to_ids(image_token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(f"{image_token!r} is not one token of {text_dir}'s vocabulary")
    vision_cfg, text_cfg = AutoConfig.from_pretrained(vision_dir), AutoConfig.from_pretrained(text_dir)
    cfg = LlavaConfig(vision_config=vision_cfg, text_config=text_cfg, image_token_id=token_id,
                      projector_hidden_act="linear" if projector == "linear" else "gelu", vision_feature_layer=-1,
                      vision_feature_select_strategy="default", multimodal_projector_bias=True,
                      tie_word_embeddings=getattr(text_cfg, "tie_word_embeddings", False))
    model = LlavaForConditionalGeneration(cfg).to(dtype).eval()
    model.model.vision_tower.load_state_dict(AutoModel.from_pretrained(vision_dir).state_dict())
    text = AutoModelForCausalLM.from_pretrained(text_dir, dtype=dtype)
    model.model.language_model.load_state_dict(text.model.state_dict())
    with torch.no_grad():
        model.lm_head.weight.copy_(text.lm_head.weight)
    images = BitImageProcessorPil(do_resize=True, size={"height": image_size, "width": image_size},
                               do_center_crop=False, do_normalize=True, image_mean=list(IMAGE_MEAN),
                               image_std=list(IMAGE_STD), do_convert_rgb=True)
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=vision_cfg.patch_size,
                               vision_feature_select_strategy="default", image_token=image_token,
                               num_additional_image_tokens=1)
    return model, processor
