"""Second-moment statistics C = E[k k^T] of the MLP keys at one layer, over a text corpus (ROME's layer_stats).

Computed once per (model, layer, corpus, sample count) and cached as a :class:`SecondMoment` artifact (cfg.json +
safetensors) under ``<cache>/stats/<model>-<key fingerprint>/``. The key fingerprint hashes only the weights the
keys depend on (embeddings, the blocks below, the layer's own MLP input side), so statistics survive edits of
W_out and are refused for any other model. Each text is one sample (truncated to ``max_len`` tokens); keys at
special tokens (BOS) are left out. A partial sum is checkpointed after every window of texts: a killed run resumes
where it stopped and gives the same matrix.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmscope import config as check
from lmscope import running, store
from lmscope.data.corpus import iter_texts
from lmscope.errors import ArtifactError, InputError
from lmscope.io import Result
from lmscope.methods.rome import shipped
from lmscope.model.hooks import capture
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import pad
from lmscope.progress import tqdm

log = logging.getLogger(__name__)

WINDOW = 256  # texts per checkpoint; sorted by length inside a window to limit padding


@dataclass
class StatsConfig:
    """Options of the second-moment statistics (ROME's ``layer_stats``)."""

    layer: int = field(default=0, metadata={"help": "the layer whose MLP keys are measured", "required": True})
    corpus: str = field(default="wiki", metadata={"help": "wiki, bbc, or a file / folder of texts"})
    samples: int = field(default=100_000, metadata={"help": "texts (paper: 100,000; capped at the corpus size)"})
    max_len: int = field(default=512, metadata={"help": "tokens per text (longer texts are cut)"})
    batch_tokens: int = field(default=4096, metadata={"help": "tokens per forward pass (speed / memory only)"})

    def __post_init__(self) -> None:
        check.at_least(self, 1, "samples", "max_len", "batch_tokens")


@dataclass
class SecondMoment(Result):
    """E[k k^T] of the MLP keys at ``layer`` (``matrix``: (d_mlp, d_mlp)); partial runs hold the running sum."""

    model: str
    layer: int
    corpus: str
    max_len: int
    texts: int  # texts seen
    tokens: int  # keys summed
    key_fingerprint: str
    matrix: torch.Tensor  # (d_mlp, d_mlp): the mean, or the float64 running sum while partial
    complete: bool = True

    def check(self, lm: LM, layer: int) -> None:
        """Refuse statistics of another model or layer (one clear error)."""
        problems = []
        if layer != self.layer:
            problems.append(f"they are for layer {self.layer}, the edit is at layer {layer}")
        if self.matrix.shape != (lm.d_mlp, lm.d_mlp):
            problems.append(f"their matrix is {tuple(self.matrix.shape)}, the model's keys have {lm.d_mlp} dims")
        elif key_fingerprint(lm, layer) != self.key_fingerprint:
            problems.append("they were computed on other weights")
        if problems:
            raise InputError(f"second-moment statistics of {self.model!r} do not match {lm.name}: "
                             + "; ".join(problems))


def key_fingerprint(lm: LM, layer: int) -> str:
    """Hash of every weight the keys at ``layer`` depend on (not W_out of that layer, nor anything above)."""
    w_out = lm.layout.part(layer, "mlp_out_proj")
    skip = {id(p) for p in w_out.parameters()}
    modules = [lm.layout.embed, *lm.layout.blocks[:layer + 1]]
    h = hashlib.sha256(f"{type(lm.model).__name__}:{lm.d_model}:{lm.d_mlp}:{layer}".encode())
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                if id(p) not in skip:
                    flat = p.detach().flatten()
                    h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def stats_path(lm: LM, layer: int, corpus: str, samples: int, max_len: int) -> Path:
    """Where the statistics of this (model, layer, corpus, samples) live in the store."""
    return store.second_moment_dir(lm.name, key_fingerprint(lm, layer), corpus, layer, samples, max_len)


def _texts(corpus: str, start: int, stop: int) -> list[str]:
    return list(itertools.islice(iter_texts(corpus), start, stop))


@torch.no_grad()
def _window_sum(lm: LM, layer: int, texts: list[str], max_len: int, batch_tokens: int) -> running.SecondMomentSum:
    """The running sum of k k^T over the keys of one window of texts (special tokens left out)."""
    special = torch.tensor(sorted(lm.tokenizer.all_special_ids), device=lm.device)
    encoded = sorted((lm.tokenizer(t, truncation=True, max_length=max_len)["input_ids"] for t in texts), key=len)
    moment, site = running.SecondMomentSum(lm.d_mlp), Site(layer, "mlp_key")
    batch: list[list[int]] = []
    for i, ids in enumerate(encoded):
        batch.append(ids)
        if i + 1 < len(encoded) and (len(batch) + 1) * len(encoded[i + 1]) <= batch_tokens:
            continue
        x, mask = pad(batch, lm.device)
        keep = mask.bool() & ~torch.isin(x, special)
        with lm.hooks(capture(site), stop_after=site) as cache:
            lm.model(input_ids=x, attention_mask=mask, use_cache=False)
        moment.update(cache[site][keep])  # (n_keys, d_mlp)
        batch = []
    return moment


def second_moment(lm: LM, layer: int, corpus: str = "wiki", samples: int = 100_000, max_len: int = 512,
                  batch_tokens: int = 4096, path: str | Path | None = None) -> SecondMoment:
    """C = E[k k^T] at ``layer`` over the first ``samples`` texts of ``corpus``; cached, resumable."""
    StatsConfig(layer, corpus, samples, max_len, batch_tokens)  # validates
    layer = lm.check(Site(layer, "mlp_key")).layer
    folder = Path(path) if path else stats_path(lm, layer, corpus, samples, max_len)
    if (folder / "cfg.json").is_file():
        try:
            done = SecondMoment.load(folder)
            done.check(lm, layer)
            return done
        except ArtifactError as err:
            log.warning("%s; computing the statistics again", err)
    ready = _shipped(lm, layer, corpus, samples, max_len)
    if ready is not None:
        ready.save(folder)
        return ready
    part = _resume(lm, layer, corpus, max_len, folder.with_name(folder.name + ".partial"))
    n_texts = _count_texts(corpus, samples)
    if n_texts < samples:
        log.warning("corpus %s has %d texts, fewer than the %d asked for: using all of them", corpus, n_texts,
                    samples)
    log.warning("computing the second moment of %s's MLP keys at layer %d over %d texts, once (later edits at this "
                "layer reuse it): minutes on a CPU; an estimate follows the first %d texts", lm.name, layer,
                n_texts - part.texts, WINDOW)
    bar = tqdm(total=n_texts, initial=part.texts, desc=f"stats {lm.name} L{layer}", unit="text")
    started, first = time.monotonic(), part.texts
    while part.texts < n_texts:
        texts = _texts(corpus, part.texts, min(part.texts + WINDOW, n_texts))
        window = _window_sum(lm, layer, texts, max_len, batch_tokens)
        part.matrix += window.total
        part.texts, part.tokens = part.texts + len(texts), part.tokens + window.count
        part.save_atomic(folder.with_name(folder.name + ".partial"))  # a killed run resumes here
        bar.update(len(texts))
        if part.texts - first == len(texts) and part.texts < n_texts:
            left = (time.monotonic() - started) / len(texts) * (n_texts - part.texts)
            log.warning("second moment: about %.0f min left (%d of %d texts done)", left / 60, part.texts, n_texts)
    bar.close()
    if part.tokens == 0:
        raise ArtifactError(f"corpus {corpus!r} gave no tokens for the statistics")
    done = SecondMoment(model=lm.name, layer=layer, corpus=str(corpus), max_len=max_len, texts=part.texts,
                        tokens=part.tokens, key_fingerprint=part.key_fingerprint,
                        matrix=(part.matrix / part.tokens).float())
    done.save(folder)
    shutil.rmtree(folder.with_name(folder.name + ".partial"), ignore_errors=True)
    log.info("second moment of %s at layer %d: %d texts, %d tokens -> %s", lm.name, layer, done.texts,
             done.tokens, folder)
    return done


def _shipped(lm: LM, layer: int, corpus: str, samples: int, max_len: int) -> SecondMoment | None:
    """The statistics shipped with lmscope for exactly this model, weights, layer and corpus (see ``shipped``)."""
    entry = shipped.find(lm.name, layer, corpus, samples, max_len, key_fingerprint(lm, layer))
    matrix = shipped.read(entry) if entry is not None else None
    if matrix is None:
        return None
    log.info("second moment of %s at layer %d: shipped with lmscope (%d texts, %d tokens)", lm.name, layer,
             entry.texts, entry.tokens)
    return SecondMoment(model=lm.name, layer=layer, corpus=str(corpus), max_len=max_len, texts=entry.texts,
                        tokens=entry.tokens, key_fingerprint=entry.key_fingerprint, matrix=matrix)


def _count_texts(corpus: str, samples: int) -> int:
    n = 0
    for n, _ in enumerate(iter_texts(corpus), start=1):
        if n >= samples:
            break
    return n


def _resume(lm: LM, layer: int, corpus: str, max_len: int, partial: Path) -> SecondMoment:
    """The checkpointed running sum, if one of this model and layer exists; else an empty one."""
    fingerprint = key_fingerprint(lm, layer)
    if (partial / "cfg.json").is_file():
        try:
            part = SecondMoment.load(partial)
            if part.key_fingerprint == fingerprint and part.layer == layer and part.max_len == max_len:
                log.info("resuming the statistics after %d texts (%s)", part.texts, partial)
                return part
        except ArtifactError as err:
            log.warning("%s; starting the statistics again", err)
    return SecondMoment(model=lm.name, layer=layer, corpus=str(corpus), max_len=max_len, texts=0, tokens=0,
                        key_fingerprint=fingerprint, complete=False,
                        matrix=torch.zeros(lm.d_mlp, lm.d_mlp, dtype=torch.float64))
