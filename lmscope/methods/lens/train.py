"""Training a tuned lens (Belrose et al. 2023) on a packaged corpus: resumable, one pass over the text.

Each forward pass of the frozen model gives every residual stream h^0 .. h^{L-1} and the final distribution P_final
at every kept position; each translator learns KL(P_final || softmax(unembed(h + W h + b))) at the same position
(tuned-lens' default ``token_shift`` 0). The KL's gradient with respect to the logits is ``softmax(z) - P_final``,
computed in one pass over the vocabulary (:class:`KLFromLogits`). Checkpoints (translators, SGD's momentum, the
step, the loss history) are written every ``checkpoint_every`` steps: a killed run resumes at its last one, on the
same batches.

Training steps are small on a CPU (thousands of tokens, where the paper's are 2^18), so a translator whose stream is
already close to the output (the last blocks') can end further from it than the identity it started at. After
training, each translator is shrunk towards the identity on held-out batches of the training split
(:func:`shrink_translators`): h + a (W h + b) with the ``a`` of :data:`SHRINK` that reads them best.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from lmscope.checkpoints import load_training_state, save_training_state
from lmscope.data.activations import corpus_batches, run_batch
from lmscope.methods.lens.config import TuneConfig
from lmscope.model.lm import LM
from lmscope.model.precision import fast_autocast
from lmscope.model.readout import TunedLens
from lmscope.model.sites import Site
from lmscope.model.weights import frozen
from lmscope.progress import tqdm
from lmscope.runs import check_settings

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
SHRINK = (0.0, 0.25, 0.5, 0.75, 1.0)  # the translator's part kept: 0 is the identity (the logit lens), 1 as trained


class KLFromLogits(torch.autograd.Function):
    """Per-row KL(p || softmax(z)) from logits ``z`` (rows, vocab) and target probabilities ``p`` (rows, vocab).

    ``entropy`` (rows,) is H(p), so the value is the KL itself: lse(z) - p . z - H(p). The gradient with respect
    to ``z``, ``softmax(z) - p``, is computed in the forward pass, :data:`ROWS` rows at a time so that the
    vocabulary-sized temporaries stay in cache, and kept in ``z``'s dtype; the backward pass only scales it.
    On a CPU this is about 3x faster than autograd through log_softmax. Logits that need no gradient (a held-out
    KL) get the value alone.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, p: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:  # noqa: D102
        work = torch.promote_types(z.dtype, torch.float32)  # bfloat16 logits are summed in float32
        kl = torch.empty(z.shape[0], dtype=work, device=z.device)
        grad = torch.empty_like(z) if ctx.needs_input_grad[0] else None
        for i in range(0, z.shape[0], ROWS):
            zf, pc = z[i:i + ROWS].to(work), p[i:i + ROWS].to(work)  # (rows, vocab)
            top = zf.amax(-1, keepdim=True)  # (rows, 1)
            dot = (pc.unsqueeze(1) @ zf.unsqueeze(2)).view(-1)  # (rows,) p . z without a temporary
            e = zf.sub_(top).exp_()  # exp(z - max), in place
            total = e.sum(-1, keepdim=True)
            kl[i:i + ROWS] = (top + total.log()).view(-1) - dot - entropy[i:i + ROWS]
            if grad is not None:
                grad[i:i + ROWS] = e.div_(total).sub_(pc)
        if grad is not None:
            ctx.save_for_backward(grad)
        return kl

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: D102
        (grad,) = ctx.saved_tensors
        return grad * g[:, None].to(grad.dtype), None, None


ROWS = 64  # rows of the vocabulary-sized temporaries at a time (16 x 49,152 float32: 3 MB)


def kl_from_logits(z: torch.Tensor, p: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(z)) per row (see :class:`KLFromLogits`)."""
    return KLFromLogits.apply(z, p, entropy)


class Translators(nn.Module):
    """The trained tensors of a tuned lens, one parameter per layer.

    (A slice of one (L, d, d) parameter would give every layer's backward pass a gradient of all layers' size.)
    """

    def __init__(self, lens: TunedLens, bias: bool = True):
        super().__init__()
        self.weight = nn.ParameterList([nn.Parameter(w.clone()) for w in lens.weight])  # (d, d) each
        self.bias = nn.ParameterList([nn.Parameter(b.clone(), requires_grad=bias) for b in lens.bias])  # (d,) each

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, d, d) weights and (L, d) biases."""
        return torch.stack([w.detach() for w in self.weight]), torch.stack([b.detach() for b in self.bias])


def _targets(lm: LM, final: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """P_final (n, vocab) float32 and its entropy (n,) from the last residual stream (n, d)."""
    with torch.no_grad(), _autocast(lm, autocast):
        logp = torch.log_softmax(lm.unembed(final).float(), -1)
    p = logp.exp()
    return p, -(p * logp).sum(-1)


def _autocast(lm: LM, on: bool):
    """bfloat16 matmuls on the model's device (the translators and every sum stay float32)."""
    return torch.autocast(lm.device.type, dtype=torch.bfloat16) if on else nullcontext()


def _positions(lm: LM, streams: list[torch.Tensor], config: TuneConfig, gen: torch.Generator):
    """A random ``position_fraction`` of the kept positions (index), P_final there (m, vocab) and its entropy (m,)."""
    n = streams[0].shape[0]
    m = max(1, round(n * config.position_fraction))
    idx = torch.randperm(n, generator=gen)[:m].sort().values if m < n else slice(None)
    return idx, *_targets(lm, streams[-1][idx], config.autocast)


def batch_losses(lm: LM, tr: Translators, streams: list[torch.Tensor], config: TuneConfig,
                 gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Backpropagate every translator's mean KL on one batch; (L,) the KLs.

    ``streams``: the kept positions of h^0 .. h^L, (n, d) each; the last one gives the targets. Every translator
    learns from the same random part of the positions (``position_fraction``), so the final distribution is
    computed at those positions only.
    """
    idx, p, entropy = _positions(lm, streams, config, gen)
    losses = torch.zeros(len(streams) - 1)
    for row, h in enumerate(streams[:-1]):
        x = h[idx]  # (m, d)
        with _autocast(lm, config.autocast):
            z = lm.unembed(x + nn.functional.linear(x, tr.weight[row], tr.bias[row]))  # (m, vocab)
        loss = kl_from_logits(z, p, entropy).mean()
        (loss * scale).backward()
        losses[row] = loss.detach()
    return losses


def _schedule(config: TuneConfig):
    """A linear warm-up, then a linear decay to 0 at the last step.

    (tuned-lens passes ``steps - warmup`` as the total to transformers' schedule, so with a warm-up its rate reaches
    0 ``warmup`` steps before the end; with SGD's default of no warm-up the two are the same.)
    """
    warmup, total = config.warmup, config.steps

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _optimizer(params: list[torch.Tensor], config: TuneConfig) -> torch.optim.Optimizer:
    """tuned-lens' optimisers: SGD with Nesterov momentum, or AMSGrad Adam."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.momentum, 0.999), amsgrad=True,
                                weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           weight_decay=config.weight_decay)


def _settings(lens: TunedLens, config: TuneConfig) -> dict:
    """What a resumed run must share (the selection after training is not part of it: a finished run reselects)."""
    cfg = dataclasses.asdict(config)
    cfg.pop("select_tokens")
    return {"model": lens.model, "unembed_hash": lens.unembed_hash, "config": cfg}


def train_tuned_lens(lm: LM, config: TuneConfig | None = None, out: str | Path | None = None) -> TunedLens:
    """Train a tuned lens of ``lm`` on ``config.tokens`` tokens; ``out``: a folder to checkpoint in (and resume from).

    Returns the lens with its training record (tokens, steps, seconds, the per-layer KL of the last steps).
    """
    config = config or TuneConfig()
    config = dataclasses.replace(config, autocast=fast_autocast(config.autocast, lm.device, "tuned lens"))
    lm.check_length(config.seq_len)
    lens = TunedLens.identity(lm)  # hashes the unembedding once: the lens and the run's settings both record it
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        check_settings(out, _settings(lens, config))
    tr = Translators(lens, config.bias)
    opt = _optimizer([p for p in tr.parameters() if p.requires_grad], config)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(config))
    history, seconds = _resume(out, tr, opt, sched)
    start = len(history)
    sites = [Site(0, "resid_pre"), *lm.sites("resid_post")]
    per = config.batches_per_step
    batches = itertools.islice(corpus_batches(lm.tokenizer, config), start * per, config.steps * per)
    bar = tqdm(total=config.steps, initial=start, desc=f"tuned lens {lm.name}", unit="step")
    t0 = time.perf_counter() - seconds
    with frozen(lm.model):
        for step in range(start, config.steps):
            rows = list(itertools.islice(batches, per))
            if len(rows) < per:  # the corpus holds fewer tokens than asked: the lens is what it learned from them
                log.warning("%s (%s split) ran out after %d steps (%d tokens of the %d asked); the lens is trained "
                            "on those", config.corpus, config.split, step, step * per * config.seq_len *
                            config.batch_size, config.tokens)
                break
            kl = _step(lm, tr, opt, rows, sites, config, step)
            sched.step()
            history.append(kl.tolist())
            bar.update(1)
            bar.set_postfix(kl=f"{float(kl.mean()):.3f}")
            if out is not None and (step + 1) % config.checkpoint_every == 0:
                _checkpoint(out, tr, opt, sched, history, time.perf_counter() - t0)
    bar.close()
    seconds = time.perf_counter() - t0
    if out is not None:
        _checkpoint(out, tr, opt, sched, history, seconds)
    steps = len(history)
    shrink = shrink_translators(lm, tr, config, first_batch=steps * per) if config.select_tokens else {}
    lens.weight, lens.bias = tr.stacked()
    tokens = steps * per * config.seq_len * config.batch_size
    lens.training = {"tokens": tokens, "steps": steps, "seconds": round(seconds, 1),
                     "config": dataclasses.asdict(config), "history": history, "shrink": shrink}
    log.info("tuned lens of %s: %d tokens, %d steps in %.0f s; mean train KL %.3f at the end", lm.name, tokens,
             steps, seconds, sum(history[-1]) / max(1, len(history[-1])) if history else float("nan"))
    return lens


def _step(lm: LM, tr: Translators, opt, rows: list[torch.Tensor], sites: list[Site], config: TuneConfig,
          step: int) -> torch.Tensor:
    """One optimiser step over a few forward passes; (L,) the mean KL of each translator."""
    gen = torch.Generator().manual_seed(step)  # a resumed run draws the same position subsets
    kl = torch.zeros(len(sites) - 1)
    for ids in rows:
        with torch.no_grad(), _autocast(lm, config.autocast):
            batch = run_batch(lm, ids, sites, config)
        streams = [batch.kept(s) for s in sites]  # (n, d) float32 each
        kl += batch_losses(lm, tr, streams, config, gen, scale=1 / len(rows)) / len(rows)
    if config.clip > 0:
        nn.utils.clip_grad_norm_(tr.parameters(), config.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return kl


@torch.no_grad()
def shrink_translators(lm: LM, tr: Translators, config: TuneConfig, first_batch: int) -> dict:
    """Scale each translator's (W, b) by the ``a`` of :data:`SHRINK` with the lowest held-out KL, in place.

    The held-out text is the training split's next ``select_tokens`` tokens after the ``first_batch`` batches
    trained on (never the test split, which :func:`compare_lenses` reads), at ``position_fraction`` of their
    positions. Returns ``{"layers": [the residual stream each translator reads: "embed", "0", ..], "alpha": [a
    per translator], "kl": [[KL per a] per translator], "positions": n, "tokens": n}``; ``{}`` with a warning where
    the split has no text left.
    """
    n_batches = -(-config.select_tokens // (config.seq_len * config.batch_size))
    read = (first_batch + n_batches) * config.seq_len * config.batch_size  # the trained tokens, then these
    batches = itertools.islice(corpus_batches(lm.tokenizer, config, tokens=read), first_batch, None)
    sums, positions, tokens = _shrink_sums(lm, tr, config, tqdm(batches, total=n_batches, unit="batch",
                                                                desc=f"tuned lens {lm.name}: shrink"))
    if not positions:
        log.warning("%s (%s split) has no text left after training: the translators are kept as trained, not "
                    "checked on held-out text", config.corpus, config.split)
        return {}
    kl = sums / positions  # (translators, len(SHRINK))
    alpha = [SHRINK[int(i)] for i in kl.argmin(-1)]
    for row, a in enumerate(alpha):
        tr.weight[row].mul_(a)
        tr.bias[row].mul_(a)
    layers = ["embed", *(str(i) for i in range(len(alpha) - 1))]  # translator i reads stream i: embed, block 0 ..
    log.info("tuned lens of %s: translators shrunk towards the identity on %d held-out positions: %s", lm.name,
             positions, ", ".join(f"{n}: {a:g}" for n, a in zip(layers, alpha) if a < 1) or "none")
    return {"layers": layers, "alpha": alpha, "kl": kl.tolist(), "positions": positions, "tokens": tokens}


def _shrink_sums(lm: LM, tr: Translators, config: TuneConfig, batches) -> tuple[torch.Tensor, int, int]:
    """Summed KLs of h + a (W h + b), (translators, len(SHRINK)), over a part of the batches' positions.

    Also the positions and tokens read.
    """
    sites = [Site(0, "resid_pre"), *lm.sites("resid_post")]
    sums = torch.zeros(len(sites) - 1, len(SHRINK), dtype=torch.float64)
    gen, positions, tokens = torch.Generator().manual_seed(2**31 - 1), 0, 0
    for ids in batches:
        with _autocast(lm, config.autocast):
            batch = run_batch(lm, ids, sites, config)
        streams = [batch.kept(s) for s in sites]  # (n, d) float32 each
        idx, p, entropy = _positions(lm, streams, config, gen)  # (m, vocab), (m,)
        for row, h in enumerate(streams[:-1]):
            x = h[idx]  # (m, d)
            delta = nn.functional.linear(x, tr.weight[row], tr.bias[row])  # (m, d) the translator's part
            for k, a in enumerate(SHRINK):
                with _autocast(lm, config.autocast):
                    z = lm.unembed(x + a * delta)  # (m, vocab)
                sums[row, k] += float(kl_from_logits(z, p, entropy).sum())
        positions, tokens = positions + len(p), tokens + ids.numel()
    return sums, positions, tokens


def _checkpoint(out, tr: Translators, opt, sched, history: list[list[float]], seconds: float) -> None:
    save_training_state(Path(out) / CHECKPOINT, tr, opt, "translators",
                        {"history": torch.tensor(history), "sched": torch.tensor(sched.last_epoch),
                         "seconds": torch.tensor(seconds, dtype=torch.float64)})


def _resume(out, tr: Translators, opt, sched) -> tuple[list[list[float]], float]:
    stem = Path(out) / CHECKPOINT if out is not None else None
    if stem is None or not stem.with_name(CHECKPOINT + ".safetensors").is_file():
        return [], 0.0
    t, _ = load_training_state(stem, tr, opt, "translators")
    sched.last_epoch = int(t["sched"])  # the saved param_groups carry the learning rate of the next step
    history = t["history"].tolist()
    log.info("resuming the tuned lens from %s at step %d", stem, len(history))
    return history, float(t["seconds"])
