"""Train the projector of a LLaVA-style model on rendered, captioned images, everything else frozen.

Each step embeds "<image tokens> A picture of a red apple." as LLaVA does (the projector's image of each patch
feature scattered into the image-token positions) and minimises the cross-entropy of the caption's tokens only.
The frozen vision encoder's patch features are computed once per rendering, without gradients. Every epoch
renders each training concept anew (another background, size, position); an epoch's end is a checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmscope.checkpoints import load_training_state, save_training_state
from lmscope.data.images import COLOURS, Concept, render
from lmscope.errors import ConfigError
from lmscope.io import Result
from lmscope.methods.projector.config import ProjectorConfig
from lmscope.progress import tqdm

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"  # checkpoint.safetensors + checkpoint.json (lmscope.checkpoints)
TV_IMAGES = 40  # images of distinct seen concepts whose first-word distributions are compared pairwise


@dataclass
class ProjectorResult(Result):
    """A projector run: its losses and the captions of held-out renderings (seen concepts) and unseen concepts."""

    losses: list[float]
    train_concepts: int
    heldout: list[dict]  # {caption, generated, seen, exact, recall, named}
    config: ProjectorConfig = field(default_factory=ProjectorConfig)
    first_word_tv: float | None = None  # mean total variation of P(first caption token) between pairs of images
    noun_tv: float | None = None  # the same for the token after the prompt and " a" (the article is read as given)
    seconds: float | None = None  # wall time of the training steps (a resumed run's earlier sessions included)

    def summary(self) -> dict:
        """Exact-match rate, word recall and how often the caption names the concept, seen and unseen apart.

        Also the mean total variation of the first word's distribution between images (near 0: the image is not
        read).
        """
        out = {"steps": len(self.losses), "final_loss": self.losses[-1] if self.losses else None,
               "train_concepts": self.train_concepts, "first_word_tv": self.first_word_tv, "noun_tv": self.noun_tv,
               "seconds": self.seconds}
        for seen in (True, False):
            rows = [r for r in self.heldout if r["seen"] == seen]
            key = "seen" if seen else "unseen"
            out[key] = {"images": len(rows), "exact": sum(r["exact"] for r in rows) / max(1, len(rows)),
                        "word_recall": sum(r["recall"] for r in rows) / max(1, len(rows)),
                        "named": sum(r.get("named", False) for r in rows) / max(1, len(rows))}
        return out


def split_concepts(concepts: list[Concept], fraction: float, seed: int) -> tuple[list[Concept], list[Concept]]:
    """(training, held-out) concepts: a seeded random ``fraction`` is never trained on."""
    order = list(range(len(concepts)))
    random.Random(seed).shuffle(order)
    n = round(len(concepts) * fraction)
    held = set(order[:n])
    return [c for i, c in enumerate(concepts) if i not in held], [c for i, c in enumerate(concepts) if i in held]


def subset(train: list[Concept], n: int, seed: int) -> list[Concept]:
    """``n`` of the training concepts drawn at random (seeded), in their original order (all: ``n`` 0 or too many).

    The concepts come in code-point order, grouped by theme (weather, plants, food, ...): the first ``n`` would be
    one theme's.
    """
    if not n or n >= len(train):
        return train
    keep = sorted(random.Random(seed + 1).sample(range(len(train)), n))
    return [train[i] for i in keep]


def lr_factor(step: int, total: int, config: ProjectorConfig) -> float:
    """The learning rate's factor at ``step`` (0-based) of ``total``: linear warm-up, then cosine to 0 or constant."""
    warm = config.warmup_steps
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant" or total <= warm:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / (total - warm))))


@torch.no_grad()
def patch_features(model, processor, images: list, batch: int = 64) -> torch.Tensor:
    """(n, patches, d_vision): the vision encoder's patch features (CLS dropped) at LLaVA's feature layer."""
    layer = model.config.vision_feature_layer
    out = []
    for start in range(0, len(images), batch):
        pixels = processor.image_processor(images[start:start + batch], return_tensors="pt")["pixel_values"]
        hidden = model.model.vision_tower(pixels.to(model.device, model.dtype), output_hidden_states=True)
        out.append(hidden.hidden_states[layer][:, 1:].float().cpu())
    return torch.cat(out)


def caption_batch(model, processor, captions: list[str], config: ProjectorConfig, n_patches: int) -> dict:
    """input_ids (image placeholder expanded), attention mask, labels (-100 except the caption's tokens)."""
    tok = processor.tokenizer
    prefix = config.prompt.replace(processor.image_token, processor.image_token * n_patches)
    pre = tok(prefix, add_special_tokens=False)["input_ids"]
    rows = [pre + tok(" " + c + ".", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in captions]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        labels[i, len(pre):len(r)] = torch.tensor(r[len(pre):])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def embed_with_images(model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(batch, pos, d_model): token embeddings with the projected patch features at the image tokens (as LLaVA)."""
    embeds = model.get_input_embeddings()(input_ids)
    image = model.model.multi_modal_projector(features.to(embeds.dtype))  # (batch, patches, d_model)
    mask = (input_ids == model.config.image_token_id)[..., None].expand_as(embeds)
    return embeds.masked_scatter(mask, image)


def caption_loss(model, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean next-token cross-entropy of the caption's tokens, the unembedding applied at those positions only.

    The same loss as the model's own ``labels=`` (tested), without the (batch, pos, vocab) logits of the image
    and prompt positions, which are most of the sequence.
    """
    hidden = model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (batch, pos, d_model)
    target = labels[:, 1:]  # (batch, pos - 1)
    keep = target != -100
    logits = model.lm_head(hidden[:, :-1][keep])  # (captions' tokens, vocab)
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


@torch.no_grad()
def standardized_init(model, feats: torch.Tensor, seed: int = 0) -> None:
    """Start the projector at centred, scaled patch features and at the text embeddings' norm.

    DINOv2's patch features share a large common component (projected as they are, different images came out at
    cosine 0.86 of each other and 20x the norm of a token embedding, and the captions collapsed). The first layer
    gets W / sigma and -W mu / sigma (mu, sigma: per-feature mean and std over ``feats``: (images, patches, d_vision)),
    the last one a scale that puts the output at the mean norm of the LM's input embeddings; the model's
    architecture is unchanged (a plain LLaVA projector), only its starting point.
    """
    proj = model.model.multi_modal_projector
    flat = feats.reshape(-1, feats.shape[-1]).float()
    mu, sigma = flat.mean(0), flat.std(0).clamp_min(1e-6)
    gen = torch.Generator().manual_seed(seed)
    d_in, d_hidden = proj.linear_1.in_features, proj.linear_1.out_features
    w1 = torch.randn(d_hidden, d_in, generator=gen) / d_in ** 0.5 / sigma  # unit variance per hidden unit
    proj.linear_1.weight.copy_(w1)
    proj.linear_1.bias.copy_(-(w1 @ mu))
    target = float(model.get_input_embeddings().weight.float().norm(dim=-1).mean())  # a token embedding's norm
    d_out = proj.linear_2.out_features
    w2 = torch.randn(d_out, d_hidden, generator=gen) * (target / d_out ** 0.5) / d_hidden ** 0.5
    proj.linear_2.weight.copy_(w2)
    proj.linear_2.bias.zero_()


def renderings(concepts: list[Concept], size: int, seed: int, font, rotation: float = 0.0) -> list:
    """One rendering of each concept, drawn from ``seed`` (each concept its own seed within it)."""
    return [render(c, size, seed * 1_000_003 + i, font, rotation) for i, c in enumerate(concepts)]


def train_projector(model, processor, concepts: list[Concept], config: ProjectorConfig | None = None,
                    out: str | Path | None = None, font=None) -> ProjectorResult:
    """Train ``model``'s projector in place on ``concepts`` (held-out ones split off first); evaluate captions.

    ``out``: a folder for the per-epoch checkpoint (a rerun resumes from it).
    """
    config = config or ProjectorConfig()
    if processor.image_token != config.image_token:
        raise ConfigError(f"the config's image token {config.image_token!r} is not the processor's "
                          f"{processor.image_token!r}: the prompt would hold no image")
    train, heldout = split_concepts(concepts, config.heldout_fraction, config.data_seed)
    train = subset(train, config.max_concepts, config.data_seed)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.model.multi_modal_projector.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, config))
    losses, start, seconds = _resume(out, model, opt, sched)
    began = time.perf_counter() - seconds
    bar = tqdm(total=total, initial=len(losses), desc="projector", unit="step")
    for epoch in range(start, config.epochs):
        feats = patch_features(model, processor, renderings(train, config.image_size, 1 + epoch, font, config.rotation))
        if config.standardize and not losses:  # a fresh start (a resumed run has its projector already)
            standardized_init(model, feats, config.data_seed)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.data_seed + epoch))
        for s in range(steps_per_epoch):
            idx = order[s * config.batch_size:(s + 1) * config.batch_size]
            batch = caption_batch(model, processor, [train[i].caption for i in idx], config, feats.shape[1])
            embeds = embed_with_images(model, batch["input_ids"].to(model.device), feats[idx].to(model.device))
            loss = caption_loss(model, embeds, batch["attention_mask"].to(model.device),
                                batch["labels"].to(model.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch)
        _checkpoint(out, model, opt, sched, losses, epoch + 1, time.perf_counter() - began)
    bar.close()
    seconds = time.perf_counter() - began
    for p in params:
        p.requires_grad_(False)
    rows = evaluate_captions(model, processor, train, heldout, config, font)
    images = renderings(train[:TV_IMAGES], config.image_size, 20_000 + config.data_seed, font, config.rotation)
    tv, noun_tv = (first_word_tv(model, processor, images, config, suffix=s) for s in ("", " a"))
    return ProjectorResult(losses=losses, train_concepts=len(train), heldout=rows, config=config, first_word_tv=tv,
                           noun_tv=noun_tv, seconds=seconds)


def _checkpoint(out, model, opt, sched, losses: list[float], epochs: int, seconds: float = 0.0) -> None:
    if out is None:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    save_training_state(Path(out) / CHECKPOINT, model.model.multi_modal_projector, opt, "projector",
                        {"losses": torch.tensor(losses), "epochs": torch.tensor(epochs),
                         "sched": torch.tensor(sched.last_epoch),
                         "seconds": torch.tensor(seconds, dtype=torch.float64)})


def _resume(out, model, opt, sched) -> tuple[list[float], int, float]:
    stem = Path(out) / CHECKPOINT if out is not None else None
    if stem is None or not stem.with_name(CHECKPOINT + ".safetensors").is_file():
        return [], 0, 0.0
    t, _ = load_training_state(stem, model.model.multi_modal_projector, opt, "projector")
    sched.last_epoch = int(t["sched"]) - 1
    with warnings.catch_warnings():  # a resumed schedule steps once before the optimiser does: on purpose
        warnings.simplefilter("ignore", UserWarning)
        sched.step()  # the learning rate of the step the run resumes at, not the schedule's first
    log.info("resuming the projector from %s (epoch %d)", stem, int(t["epochs"]))
    return t["losses"].tolist(), int(t["epochs"]), float(t["seconds"]) if "seconds" in t else 0.0


@torch.no_grad()
def caption(model, processor, images: list, config: ProjectorConfig) -> list[str]:
    """Greedy captions of ``images`` after the prompt."""
    out = []
    for image in images:
        x = processor(images=image, text=config.prompt, return_tensors="pt")
        ids = model.generate(**x.to(model.device), max_new_tokens=config.max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.eos_token_id)
        text = processor.tokenizer.decode(ids[0, x["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append(text.split(".")[0].strip())
    return out


def _words(text: str) -> set[str]:
    return {w for w in text.lower().replace(",", " ").split() if w not in ("a", "an", "the", "of", "with")}


GENERIC = frozenset(("face", "sign", "symbol", "button", "mark", "and", "over", "on", "in", "at"))  # + _words' own


def names_concept(concept: Concept, generated: str) -> bool:
    """Whether a caption names the concept: it holds a word of the concept's name other than articles and colours.

    Generic words (:data:`GENERIC`) do not count either: "a dog face" is named by "dog", "a red circle" by "circle",
    not by "red" alone.
    """
    nouns = _words(concept.caption) - GENERIC - set(COLOURS)
    return bool(nouns & _words(generated.replace(".", " ")))


@torch.no_grad()
def first_word_tv(model, processor, images: list, config: ProjectorConfig, batch: int = 16,
                  suffix: str = "") -> float:
    """Mean total variation between the next token's distributions after the prompt of every pair of ``images``.

    ``suffix``: text fed after the prompt first (" a": the word after the article, where captions differ most).
    """
    probs = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        x = processor(images=chunk, text=[config.prompt + suffix] * len(chunk), return_tensors="pt").to(model.device)
        probs.append(model(**x).logits[:, -1].float().softmax(-1).cpu())  # (images, vocab)
    p = torch.cat(probs)
    if len(p) < 2:
        return 0.0
    tv = 0.5 * torch.cdist(p, p, p=1)  # (images, images)
    return float(tv.sum() / (len(p) * (len(p) - 1)))


def evaluate_captions(model, processor, train: list[Concept], heldout: list[Concept], config: ProjectorConfig,
                      font=None) -> list[dict]:
    """Captions of new renderings of seen concepts and of unseen ones: exact match, word recall, the concept named."""
    rows = []
    seed = 10_000 + config.data_seed
    seen_group = train[:config.eval_seen] if config.eval_seen else train
    for seen, group in ((True, seen_group), (False, heldout)):
        for r in range(config.eval_renders):
            images = renderings(group, config.image_size, seed + r, font, config.rotation)
            for concept, generated in zip(group, caption(model, processor, images, config)):
                want = concept.caption
                truth = _words(want)
                rows.append({"caption": want, "generated": generated, "seen": seen,
                             "exact": generated.lower() == want.lower(),
                             "recall": len(truth & _words(generated)) / max(1, len(truth)),
                             "named": names_concept(concept, generated)})
    return rows
