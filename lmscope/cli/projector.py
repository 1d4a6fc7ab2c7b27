"""``lmscope vlm train-projector``: train the bundled vision-language model's projector (SmolLM2 + DINOv2, frozen)."""

from __future__ import annotations

from lmscope.cli.registry import command, config, out_dir, save_result
from lmscope.data.images import emoji_concepts, emoji_font, shape_concepts
from lmscope.io import save_tensors
from lmscope.methods.projector import ProjectorConfig, train_projector
from lmscope.model.loading import REGISTRY, ensure_converted
from lmscope.model.vision import dinov2_folder
from lmscope.model.vlm import build_llava


@command("train-projector", configs=(ProjectorConfig,), out="out/projector")
def projector(args) -> int:
    """Write checkpoint/, projector.safetensors, projector.json and result/ (held-out captions)."""
    cfg = config(args, ProjectorConfig)  # the prompt holds the image token: checked before anything loads
    font = emoji_font()  # a missing font fails before any model loads
    concepts = emoji_concepts(font) + (shape_concepts() if cfg.shapes else [])
    model, processor = build_llava(ensure_converted(REGISTRY["smollm2-135m"]), dinov2_folder(), cfg.projector,
                                   cfg.image_size, cfg.image_token)
    model.to(args.device)  # --device cuda trains there; renderings are drawn on the CPU
    out = out_dir(args)
    result = train_projector(model, processor, concepts, cfg, out=out / "checkpoint", font=font)
    save_tensors(out / "projector.safetensors", dict(model.model.multi_modal_projector.state_dict()))
    save_result(out, result, "projector.json")
    s = result.summary()
    print(f"projector: {s['steps']} steps in {s['seconds'] / 60:.0f} min, final loss {s['final_loss']:.3f}; seen "
          f"concepts, new renderings: named "
          f"{s['seen']['named']:.2f}, exact {s['seen']['exact']:.2f}, word recall {s['seen']['word_recall']:.2f}; "
          f"unseen concepts: named {s['unseen']['named']:.2f}, exact {s['unseen']['exact']:.2f}; first word's "
          f"total variation between images {s['first_word_tv']:.2f} (after ' a': {s['noun_tv']:.2f}) -> {out}")
    return 0
