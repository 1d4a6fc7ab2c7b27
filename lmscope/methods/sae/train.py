"""Training one or many SAEs from one stream of activations (a sweep pays for the harvest once).

Every SAE of a sweep (other L1 coefficients, k, widths, architectures or sites) takes the same batches. Adam with a
linear warm-up and a final linear decay of the learning rate, an L1 warm-up, the decoder bias initialised at the
geometric median (or mean) of the first batch, inputs scaled to E|x| = sqrt(d_in), dead latents tracked, resampled
(L1 variants) or revived by AuxK (TopK variants). A checkpoint (weights, Adam state, dead-latent counters, stream
position) is written every ``checkpoint_every`` steps; a killed run resumes from it to the same result. A
non-finite loss stops the run with a checkpoint of the last good state.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch

from lmscope.checkpoints import checkpoint_folder, load_training_state, save_training_state
from lmscope.distributed import World
from lmscope.errors import ConfigError, DataError, TrainingError
from lmscope.io import read_json, write_json
from lmscope.memory import keep_freed_memory
from lmscope.methods.sae.arch import SparseAutoencoder, build_sae, geometric_median
from lmscope.methods.sae.artifacts import folded_weights, save_sae
from lmscope.methods.sae.config import HarvestConfig, SaeConfig, TrainConfig, training_steps
from lmscope.methods.sae.dead import Firing, resample
from lmscope.methods.sae.harvest import ActivationStream, ShardedStream, check_sites, site_key, site_width
from lmscope.methods.sae.registry import sae_class
from lmscope.model.lm import LM
from lmscope.model.precision import fast_autocast
from lmscope.model.sites import Site
from lmscope.progress import tqdm
from lmscope.runs import check_settings, prepare_out

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"
WARMED = {"l1_coefficient": "l1_factor", "l0_coefficient": "l0_factor"}  # sparsity terms warmed up, and their log key


@dataclass
class Job:
    """One dictionary of a sweep: where it reads, what it is, its folder name; a transcoder's ``target`` too."""

    site: Site
    config: SaeConfig
    name: str = ""
    target: Site | None = None  # where a transcoder's prediction is compared (mlp_out of the MLP it reads)

    def __post_init__(self) -> None:
        if self.target is not None and not self.config.transcoder:
            self.config = replace(self.config, transcoder=True)
        if self.config.transcoder and self.target is None:
            raise ConfigError(f"a transcoder reading {self.site} needs a target site (what it predicts)")
        if not self.name:
            c = self.config
            knob = sae_class(c.architecture).job_tag(c)
            where = site_key(self.site) + (f"-{site_key(self.target)}" if self.target is not None else "")
            arch = ("skip" if c.skip else "") + c.architecture
            self.name = f"{where}-{arch}-{c.width or f'r{c.ratio:g}'}-{knob}"

    @property
    def sites(self) -> list[Site]:
        """The sites it needs harvested: where it reads, and a transcoder's target."""
        return [self.site] + ([self.target] if self.target is not None else [])


@dataclass
class _Trainee:
    """A job being trained: its SAE, optimiser, dead-latent counters, input scale and log."""

    job: Job
    sae: SparseAutoencoder
    opt: torch.optim.Adam
    firing: Firing
    scale: float
    log: list[dict] = field(default_factory=list)
    out_scale: float = 0.0  # a transcoder's target scale (0: the input's, an autoencoder)

    def targets(self, batch: dict, device) -> torch.Tensor | None:
        """A transcoder's targets in ``batch`` (n, d_out), scaled as in training; None for an autoencoder."""
        return None if self.job.target is None else batch[self.job.target].to(device) * self.out_scale


def fve(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance explained: 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 over the rows."""
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - (x - x_hat).pow(2).sum() / total.clamp_min(1e-12))


def _schedule(step: int, total: int, cfg: TrainConfig) -> tuple[float, float]:
    """(learning-rate factor, L1 factor) at ``step`` of a nominal ``total``."""
    lr = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    decay_start = total * (1 - cfg.decay_fraction)
    if cfg.decay_fraction and step >= decay_start:
        lr *= max(0.0, (total - step) / (total - decay_start))
    l1 = min(1.0, step / (cfg.l1_warmup_fraction * total)) if cfg.l1_warmup_fraction and total else 1.0
    return lr, l1


def _adam(sae: SparseAutoencoder, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam in one fused kernel where PyTorch has it (CPU, CUDA): on a 576 x 4608 SAE, 3 ms a step instead of 29."""
    fused = next(sae.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, fused=fused or None)


def _norm_scale(x: torch.Tensor, cfg: TrainConfig) -> float:
    """The factor that brings rows x (n, d) to E|x| = sqrt(d) (1 without input normalisation)."""
    return math.sqrt(x.shape[1]) / float(x.norm(dim=-1).mean()) if cfg.normalize_inputs else 1.0


def _new_trainee(job: Job, x: torch.Tensor, y: torch.Tensor | None, cfg: TrainConfig, device) -> _Trainee:
    """Build a job's dictionary for inputs like ``x`` (n, d) and a transcoder's targets ``y``.

    Its decoder bias starts at the (geometric) median or mean of what it writes: x, or y.
    """
    sae_cfg = replace(job.config, d_in=x.shape[1], **({"d_out": y.shape[1]} if y is not None else {}))
    sae = build_sae(sae_cfg, cfg.init_seed).to(device)
    scale = _norm_scale(x, cfg)
    out_scale = _norm_scale(y, cfg) if y is not None else 0.0
    written = (y * out_scale if y is not None else x * scale).to(device)
    if cfg.b_dec_init != "zeros":
        sae.init_b_dec(geometric_median(written) if cfg.b_dec_init == "geometric_median" else written.mean(0))
    lr = cfg.lr or sae_class(sae_cfg.architecture).default_lr
    opt = _adam(sae, lr, (cfg.beta1, cfg.beta2))
    return _Trainee(replace(job, config=sae_cfg), sae, opt, Firing(sae.d_sae, cfg.dead_tokens), scale,
                    out_scale=out_scale)


class _Pending(NamedTuple):
    """A job's gradients for one batch, computed but not applied yet; what its step and log need."""

    finite: bool
    xs: torch.Tensor  # (n, d_in), the batch at the job's input scale
    fired: torch.Tensor  # (d_sae,) bool: latents active on some row
    row: dict


def _backward(t: _Trainee, x: torch.Tensor, y: torch.Tensor | None, step: int, total: int,
              cfg: TrainConfig) -> _Pending:
    """Forward and backward on a batch x (n, d_in); the gradients stay in ``.grad`` for :func:`_step`.

    ``y``: a transcoder's scaled targets (n, d_out). One job's (n, d_sae) activations are alive at a time; a sweep
    of many SAEs keeps only their gradients.
    """
    lr_factor, l1 = _schedule(step, total, cfg)
    lr = (cfg.lr or t.sae.default_lr) * lr_factor
    for group in t.opt.param_groups:
        group["lr"] = lr
    xs = x * t.scale
    dead = t.firing.dead().to(x.device)
    t.opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.autocast):
        result = t.sae(xs, l1_scale=l1, dead=dead, target=y)
    result.loss.backward()
    active = result.codes.detach() > 0  # (n, d_sae)
    loss, recon, sparsity = (float(v.detach()) for v in (result.loss, result.reconstruction, result.sparsity))
    row = {"step": step + 1, "loss": loss, "reconstruction": recon, "sparsity": sparsity,
           "l0": int(torch.count_nonzero(active)) / active.shape[0],
           "fve": fve(xs if y is None else y, result.x_hat.detach()),
           "dead": float(dead.float().mean()), "lr": lr, "lr_factor": lr_factor,
           **({WARMED[t.sae.sweep_knob]: l1} if t.sae.sweep_knob in WARMED else {})}  # TopK: no sparsity term
    return _Pending(math.isfinite(loss), xs, active.any(0), row)


def _step(t: _Trainee, pending: _Pending, step: int, cfg: TrainConfig, world: World) -> dict:
    """Apply a job's gradients (averaged over the ranks), track and resample dead latents; returns the log row."""
    world.average_gradients(t.sae.parameters())
    t.sae.project_decoder_grad()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(t.sae.parameters(), cfg.grad_clip)
    t.opt.step()
    t.sae.constrain()
    t.firing.update(world.fired(pending.fired), pending.xs.shape[0] * world.size)
    if cfg.resample_every and t.sae.resamples and (step + 1) % cfg.resample_every == 0:
        gen = torch.Generator().manual_seed(cfg.init_seed * 7919 + step)
        n = resample(t.sae, t.opt, world.gather(pending.xs), t.firing.dead(), gen)  # the same on every rank
        t.firing.since[t.firing.dead()] = 0  # resampled latents get a fresh window
        log.info("%s: resampled %d dead latents at step %d", t.job.name, n, step + 1)
    return pending.row


# ---- checkpoints ----------------------------------------------------------------------------------------------
def _save_checkpoint(out: Path, trainees: list[_Trainee], step: int, position: tuple[int, int],
                     done: bool = False) -> None:
    """Everything a resumed run needs, replaced as a whole (a kill never leaves half a checkpoint)."""
    with checkpoint_folder(out / CHECKPOINT) as tmp:
        for i, t in enumerate(trainees):
            save_training_state(tmp / f"job-{i}", t.sae, t.opt, "sae", {"since": t.firing.since},
                                {"name": t.job.name, "config": asdict(t.job.config), "scale": t.scale, "log": t.log,
                                 **({"out_scale": t.out_scale} if t.out_scale else {})})
        write_json(tmp / "state.json", {"step": step, "position": list(position), "jobs": len(trainees),
                                        "done": done})


def _load_checkpoint(out: Path, jobs: list[Job], cfg: TrainConfig, device) -> tuple[list[_Trainee], dict]:
    """The trainees and the state (step, stream position, done) of the checkpoint in ``out``."""
    folder = out / CHECKPOINT
    state = read_json(folder / "state.json")
    trainees = []
    for i, job in enumerate(jobs):
        sae_cfg = SaeConfig(**read_json(folder / f"job-{i}.json")["config"])
        sae = build_sae(sae_cfg, cfg.init_seed).to(device)
        opt = _adam(sae, cfg.lr or sae.default_lr, (cfg.beta1, cfg.beta2))
        tensors, meta = load_training_state(folder / f"job-{i}", sae, opt, "sae")
        firing = Firing(sae.d_sae, cfg.dead_tokens)
        firing.since = tensors["since"].clone()
        trainees.append(_Trainee(replace(job, config=sae_cfg), sae, opt, firing, meta["scale"], meta["log"],
                                 meta.get("out_scale", 0.0)))
    return trainees, state


def warn_late_resampling(jobs: list[Job], cfg: TrainConfig, total: int) -> None:
    """Warn when the last resampling falls in the final learning-rate decay: the latents it revives barely train.

    (A tied dictionary on gemma3-270m resampled at step 1,000 of 1,183 ended at FVE -1.2 on held-out text.)
    """
    if not cfg.resample_every or not any(sae_class(j.config.architecture).resamples for j in jobs):
        return
    last = total // cfg.resample_every * cfg.resample_every  # resampling follows steps every, 2 every, ...
    decay = total * (1 - cfg.decay_fraction)
    if last and last > decay:
        log.warning("the last resampling of dead latents comes after step %d of %d, in the final learning-rate "
                    "decay (from step %d): the latents it revives train for %d steps at a falling rate; a "
                    "--resample-every whose last multiple is before step %d avoids it", last, total, math.ceil(decay),
                    total - last, math.ceil(decay))


def check_jobs(lm: LM, jobs: list[Job]) -> None:
    """Every job's site can be harvested from ``lm``, and its config holds at the site's width (k <= d_sae).

    ``d_in`` is the site's width, filled in when training starts: a d_in given that is another width is refused.
    """
    check_sites([s for j in jobs for s in j.sites])
    for job in jobs:
        width = site_width(lm, job.site)
        given = job.config.d_in
        if given and given != width:
            raise ConfigError(f"d-in {given} is not the width of {job.site} in {lm.name} ({width}): d_in is filled "
                              "in from the site; leave --d-in out")
        out = site_width(lm, job.target) if job.target is not None else 0
        if job.config.d_out and job.config.d_out != out:
            raise ConfigError(f"d-out {job.config.d_out} is not the width of {job.target} in {lm.name} ({out}): d_out "
                              "is filled in from the target site; leave --d-out out")
        try:
            replace(job.config, d_in=width, **({"d_out": out} if out else {}))
        except ConfigError as err:
            raise ConfigError(f"{job.name} (d_in {width}): {err}") from err


# ---- the loop -------------------------------------------------------------------------------------------------
def _settings(lm: LM, jobs: list[Job], harvest_cfg: HarvestConfig, cfg: TrainConfig) -> dict:
    return {"model": lm.name, "fingerprint": lm.fingerprint(), "harvest": harvest_cfg,
            "train": {k: v for k, v in asdict(cfg).items()  # autocast off: as runs written before it existed
                      if k != "checkpoint_every" and not (k == "autocast" and not v)},
            "jobs": [{"site": site_key(j.site), "name": j.name, "config": j.config,
                      **({"target": site_key(j.target)} if j.target is not None else {})} for j in jobs]}


def _finish(out: Path, lm: LM, trainees: list[_Trainee], step: int, cfg: TrainConfig) -> list[Path]:
    """Save every SAE (input scale folded in) with its training log."""
    paths = []
    for t in trainees:
        t.sae.input_scale.fill_(t.scale)
        if t.out_scale:
            t.sae.output_scale.fill_(t.out_scale)
        extra = {"steps": step, "tokens": step * cfg.batch_tokens, "epochs": cfg.epochs,
                 "last": t.log[-1] if t.log else {}}
        target = site_key(t.job.target) if t.job.target is not None else ""
        paths.append(save_sae(t.sae, out / t.job.name, site=site_key(t.job.site), model=lm.name, extra=extra,
                              target=target))
        write_json(out / t.job.name / "training_log.json", t.log)
        t.sae.input_scale.fill_(1.0)
        if t.out_scale:
            t.sae.output_scale.fill_(1.0)
    return paths


def _log(trainees: list[_Trainee], rows: list[dict], step: int, every: int, bar, batch_tokens: int) -> None:
    for t, row in zip(trainees, rows):
        if step % every == 0 or step == 1:
            t.log.append(row)
    rate = (bar.format_dict.get("rate") or 0) * batch_tokens
    if len(rows) == 1:
        bar.set_postfix(tok_s=f"{rate:.0f}", loss=f"{rows[0]['loss']:.4g}", l0=f"{rows[0]['l0']:.1f}",
                        fve=f"{rows[0]['fve']:.3f}", dead=f"{100 * rows[0]['dead']:.1f}%")
    else:  # a sweep: every dictionary's, not the first one's
        fve = [r["fve"] for r in rows]
        bar.set_postfix(tok_s=f"{rate:.0f}", fve=f"mean {sum(fve) / len(fve):.3f} min {min(fve):.3f}",
                        l0=f"mean {sum(r['l0'] for r in rows) / len(rows):.1f}",
                        dead=f"max {100 * max(r['dead'] for r in rows):.1f}%")
    bar.update()


def _stream(lm: LM, jobs: list[Job], harvest_cfg: HarvestConfig, cfg: TrainConfig, cache, world: World,
            shards: int):
    """The batches this rank trains on: (iterator factory, rows per local batch)."""
    sites = sorted({s for j in jobs for s in j.sites}, key=site_key)
    ways = max(world.size, shards)
    if cfg.batch_tokens % ways:
        raise ConfigError(f"batch-tokens {cfg.batch_tokens} must divide among the {ways} ranks / shards")
    def folder(r: int):
        return (Path(cache) / f"rank{r}of{ways}") if cache and ways > 1 else cache
    if world.size > 1:
        stream = ActivationStream(lm, sites, harvest_cfg, folder(world.rank), shard=(world.rank, world.size))
        return lambda start: stream.batches(cfg.batch_tokens // world.size, start, agree=world.min, epochs=cfg.epochs)
    if shards > 1:
        stream = ShardedStream([ActivationStream(lm, sites, harvest_cfg, folder(r), shard=(r, shards))
                                for r in range(shards)])
        return lambda start: stream.batches(cfg.batch_tokens, start, epochs=cfg.epochs)
    stream = ActivationStream(lm, sites, harvest_cfg, cache)
    return lambda start: stream.batches(cfg.batch_tokens, start, epochs=cfg.epochs)


def _begin(out: Path, lm: LM, jobs: list[Job], cfg: TrainConfig, batches, world: World):
    """(trainees, step, position, batch iterator): from the checkpoint, or new ones from the first global batch."""
    if (out / CHECKPOINT / "state.json").is_file():
        trainees, state = _load_checkpoint(out, jobs, cfg, lm.device)
        step, position = state["step"], tuple(state["position"])
        log.info("resuming %d SAEs at step %d from %s", len(trainees), step, out / CHECKPOINT)
        return trainees, step, position, (iter(()) if state.get("done") else batches((position[0], position[1] + 1)))
    stream = batches((0, 0))
    first = next(stream, None)
    if first is None:  # too few positions kept for half a batch (most of each row left out?)
        raise DataError(f"the harvest gave no training batch of {cfg.batch_tokens} activations (too few positions are "
                        "kept: longer rows (--seq-len), more --tokens or a smaller --batch-tokens)")
    trainees = [_new_trainee(job, world.gather(first[1][job.site]),
                             world.gather(first[1][job.target]) if job.target is not None else None, cfg, lm.device)
                for job in jobs]
    return trainees, 0, (0, -1), itertools.chain([first], stream)


def train_saes(lm: LM, jobs: list[Job], harvest_cfg: HarvestConfig | None = None, cfg: TrainConfig | None = None,
               out: str | Path = "out/sae", cache: str | Path | None = None, log_every: int = 10,
               world: World | None = None, shards: int = 1) -> list[Path]:
    """Train every job on one stream of activations; returns the saved SAE folders (resumes in ``out``).

    ``cache``: a folder of harvested activations (read where present, written where not). ``world``: the ranks of
    a ``torchrun`` run (default: from the environment). ``shards``: in one process, reproduce the global batches
    of a run on that many ranks.
    """
    harvest_cfg, cfg = harvest_cfg or HarvestConfig(), cfg or TrainConfig()
    cfg = replace(cfg, autocast=fast_autocast(cfg.autocast, lm.device, "sae train"))
    total = training_steps(harvest_cfg, cfg)
    check_jobs(lm, jobs)
    warn_late_resampling(jobs, cfg, total)
    keep_freed_memory()  # a step's (n, d_sae) tensors reuse the last step's memory (lmscope.memory)
    world = world or World.from_env(lm.device)
    batches = _stream(lm, jobs, harvest_cfg, cfg, cache, world, shards)  # refuses an empty corpus: nothing written
    out = prepare_out(out)
    world.on_main(lambda: check_settings(out, _settings(lm, jobs, harvest_cfg, cfg)))
    trainees, step, position, stream = _begin(out, lm, jobs, cfg, batches, world)
    bar = tqdm(total=total, initial=step, desc=f"sae {lm.name}", unit="step", disable=not world.main)
    for position, batch in itertools.islice(stream, max(0, total - step)):  # the schedule's steps, no more
        pending = [_backward(t, batch[t.job.site].to(lm.device), t.targets(batch, lm.device), step, total, cfg)
                   for t in trainees]
        if world.any(not all(p.finite for p in pending)):  # nothing applied yet: the state is the last good one
            world.on_main(partial(_save_checkpoint, out, trainees, step, (position[0], position[1] - 1)))
            raise TrainingError(f"the loss is not finite at step {step}; the last good state is checkpointed in "
                                f"{out / CHECKPOINT} (try a lower --lr)")
        rows = [_step(t, p, step, cfg, world) for t, p in zip(trainees, pending)]
        step += 1
        _log(trainees, rows, step, log_every, bar, cfg.batch_tokens)
        if step % cfg.checkpoint_every == 0:
            world.on_main(partial(_save_checkpoint, out, trainees, step, position))
    bar.close()
    world.on_main(partial(_save_checkpoint, out, trainees, step, position, done=True))
    return world.on_main(partial(_finish, out, lm, trainees, step, cfg)) or [out / t.job.name for t in trainees]


def fit_saes(configs: list[SaeConfig], batches, cfg: TrainConfig | None = None, steps: int | None = None,
             device: str | torch.device = "cpu") -> list[SparseAutoencoder]:
    """Train dictionaries on batches of activations that come from anywhere (no model, no folder, no resume).

    ``batches``: an iterable of (n, d) tensors (synthetic activations, a cache read by hand); ``steps``: the
    schedule's length (default: len(batches)). Every SAE sees every batch, as in :func:`train_saes`; each is returned
    with its input scale folded in (a tied one: as its input scale), in eval mode.
    """
    cfg = cfg or TrainConfig()
    cfg = replace(cfg, autocast=fast_autocast(cfg.autocast, device, "sae fit"))
    batches = list(batches) if steps is None else batches
    total = steps if steps is not None else len(batches)
    world, trainees, site = World(), [], Site(0, "resid_post")  # the site only names the jobs
    for step, x in enumerate(itertools.islice(iter(batches), total)):
        x = x.to(device)
        if not trainees:
            trainees = [_new_trainee(Job(site, c), x, None, cfg, device) for c in configs]
        pending = [_backward(t, x, None, step, total, cfg) for t in trainees]
        if not all(p.finite for p in pending):
            raise TrainingError(f"the loss is not finite at step {step} (try a lower lr)")
        for t, p in zip(trainees, pending):
            t.log.append(_step(t, p, step, cfg, world))
    for t in trainees:
        t.sae.input_scale.fill_(t.scale)
        if not t.sae.keeps_input_scale:  # folded, as save_sae writes it (a tied one keeps W_enc = W_dec^T)
            weights = folded_weights(t.sae)
            t.sae.input_scale.fill_(1.0)
            t.sae.load_weights(weights)
        t.sae.eval()
    return [t.sae for t in trainees]
