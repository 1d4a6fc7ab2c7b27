"""CounterFact evaluation of ROME edits (ROME's ``compute_rewrite_quality_counterfact``).

Each record is edited, measured and undone in turn (the paper's protocol), and measured unedited as the baseline.
Probabilities compare whole target strings by their mean token NLL: on the rewrite prompt (efficacy ES / EM),
its paraphrases (PS / PM) and the neighbourhood prompts (NS / NM, where the true answer should stay ahead);
S is the harmonic mean of ES, PS, NS. Fluency GE is the weighted bi- / tri-gram entropy of sampled text
(ROME: from the record's generation prompts; the flattened layout has none, so the rewrite and paraphrase prompts
are used, and the result says so). Consistency RS needs ROME's reference texts about each new target, which the
offline data does not include: it is reported as unavailable, never estimated. Records are written to
``records.jsonl`` as they finish; a killed run resumes there. All metrics are in percent, as in the paper.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmscope import config as check
from lmscope.data.facts import CounterFactRecord
from lmscope.distributed import World
from lmscope.errors import DataError
from lmscope.io import Result, write_json
from lmscope.methods.rome.config import EditRequest, RomeConfig
from lmscope.methods.rome.edit import resolve_layer, rome_edit
from lmscope.methods.rome.prefixes import context_prefixes
from lmscope.methods.rome.stats import second_moment
from lmscope.model.generate import greedy
from lmscope.model.generate import sample_ids as sample_with_seeds
from lmscope.model.lm import LM
from lmscope.model.tokens import pad, target_ids
from lmscope.progress import tqdm
from lmscope.runs import Run

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Options of the CounterFact evaluation; the defaults are ROME's."""

    gen_tokens: int = field(default=100, metadata={
        "help": "tokens per fluency text, prompt included (ROME's max_out_len; 0: skip GE)"})
    gen_top_k: int = field(default=5, metadata={"help": "top-k of the fluency samples"})
    gen_seed: int = field(default=0, metadata={"help": "seed of the fluency samples"})
    batch: int = field(default=16, metadata={"help": "records whose unedited samples run in one batch (speed only)"})

    def __post_init__(self) -> None:
        check.at_least(self, 0, "gen_tokens")
        check.at_least(self, 1, "gen_top_k", "batch")


# ---- probabilities ------------------------------------------------------------------------------------------------
@torch.no_grad()
def target_nll(lm: LM, prompts: Sequence[str], target: str) -> torch.Tensor:
    """Mean token NLL of ``target`` as the continuation of each prompt: (len(prompts),)."""
    tgt = target_ids(lm, target)
    rows, starts = [], []
    for prompt in prompts:
        ids = lm.tokenizer(prompt)["input_ids"]
        rows.append(ids + tgt)
        starts.append(len(ids))
    ids, mask = pad(rows, lm.device)
    logp = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1)
    pos = torch.tensor(starts, device=lm.device)[:, None] - 1 + torch.arange(len(tgt), device=lm.device)
    picked = logp[torch.arange(len(rows), device=lm.device)[:, None], pos].gather(
        -1, torch.tensor(tgt, device=lm.device).expand(len(rows), -1).unsqueeze(-1)).squeeze(-1)
    return -picked.mean(1).cpu()


def target_probs(lm: LM, prompts: Sequence[str], target: str) -> list[float]:
    """exp(-mean token NLL) of the target after each prompt (P of a one-token target)."""
    return torch.exp(-target_nll(lm, prompts, target)).tolist()


def request_state(lm: LM, request: EditRequest, new_tokens: int) -> dict:
    """The greedy continuation of the request's prompt and P(target): what an edit is judged by, before and after."""
    return {"generation": greedy(lm, request.text, new_tokens),
            "p_target": target_probs(lm, [request.text], request.target)[0]}


def record_scores(lm: LM, rec: CounterFactRecord) -> dict[str, list[list[float]]]:
    """{"rewrite" | "paraphrase" | "neighborhood": [[nll_new, nll_true] per prompt]}."""
    groups = {"rewrite": [rec.prompt], "paraphrase": list(rec.paraphrase_prompts),
              "neighborhood": list(rec.neighborhood_prompts)}
    prompts = [p for ps in groups.values() for p in ps]
    new, true = target_nll(lm, prompts, rec.new).tolist(), target_nll(lm, prompts, rec.true).tolist()
    out, i = {}, 0
    for name, ps in groups.items():
        out[name] = [[new[j], true[j]] for j in range(i, i + len(ps))]
        i += len(ps)
    return out


# ---- fluency ------------------------------------------------------------------------------------------------------
def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """ROME's n-gram entropy of one text: mean over n of weight_n x entropy (bits) of its n-gram distribution."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    values = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        values.append(w * -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0)
    return sum(values) / len(values)


def sample_ids(lm: LM, prompts: Sequence[str], config: EvalConfig,
               seeds: Sequence[int] | None = None) -> list[list[int]]:
    """Top-k samples after each prompt, ``gen_tokens`` ids per row with the prompt (ROME's ``max_out_len``).

    Row i draws from a generator seeded with ``seeds[i]`` (default: ``gen_seed + i``), so a sample is the same
    alone or in any batch (up to float rounding); see :func:`lmscope.model.generate.sample_ids`.
    """
    seeds = [config.gen_seed + i for i in range(len(prompts))] if seeds is None else seeds
    return sample_with_seeds(lm, prompts, config.gen_tokens, config.gen_top_k, seeds)


def sample_texts(lm: LM, prompts: Sequence[str], config: EvalConfig, seeds: Sequence[int] | None = None) -> list[str]:
    """The texts of :func:`sample_ids`: each prompt and its sample, as in ROME's fluency test."""
    return lm.tokenizer.batch_decode(sample_ids(lm, prompts, config, seeds), skip_special_tokens=True)


def _fluency(lm: LM, records: Sequence[CounterFactRecord], config: EvalConfig) -> list[float | None]:
    """GE of each record: mean n-gram entropy of one sample per generation prompt, all records in one batch."""
    if config.gen_tokens <= 0:
        return [None] * len(records)
    groups = [list(r.generation_prompts) or [r.prompt, *r.paraphrase_prompts] for r in records]
    seeds = [config.gen_seed * 1_000_003 + r.case_id * 1_009 + j  # one stream per (record, prompt)
             for r, g in zip(records, groups) for j in range(len(g))]
    texts = iter(sample_texts(lm, [p for g in groups for p in g], config, seeds))
    return [sum(ngram_entropy(next(texts)) for _ in g) / len(g) for g in groups]


# ---- metrics ------------------------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    return 100 * sum(values) / len(values) if values else float("nan")


def summarize(scores: list[dict]) -> dict[str, float]:
    """ES, EM, PS, PM, NS, NM, S (and GE when measured), in percent, from per-record scores."""
    out = {}
    for name, key, flip in (("rewrite", "E", False), ("paraphrase", "P", False), ("neighborhood", "N", True)):
        pairs = [p for s in scores for p in s[name]]  # (nll_new, nll_true)
        # success: the new target ahead (rewrite, paraphrase) / the true one still ahead (neighbourhood)
        out[f"{key}S"] = _mean([float((nt < nn) if flip else (nn < nt)) for nn, nt in pairs])
        out[f"{key}M"] = _mean([(math.exp(-nt) - math.exp(-nn)) if flip else (math.exp(-nn) - math.exp(-nt))
                                for nn, nt in pairs])
    parts = [out["ES"], out["PS"], out["NS"]]
    out["S"] = 3 / sum(1 / v for v in parts) if all(v > 0 for v in parts) else 0.0
    fluency = [s["ge"] for s in scores if s.get("ge") is not None]
    if fluency:
        out["GE"] = _mean(fluency)
    return out


@dataclass
class CounterFactResult(Result):
    """CounterFact metrics of ROME edits and of the unedited model, over the same records."""

    model: str
    layer: int
    n_records: int
    edited: dict[str, float]
    unedited: dict[str, float]
    notes: list[str]
    config: RomeConfig = field(default_factory=RomeConfig)
    eval_config: EvalConfig = field(default_factory=EvalConfig)
    layer_source: str = ""

    def summary(self) -> dict:
        """The metrics of ROME and of the unedited model (percent), with the notes on what was measured."""
        return {"model": self.model, "layer": self.layer, "layer_source": self.layer_source,
                "records": self.n_records, "edited": self.edited, "unedited": self.unedited, "notes": self.notes}


def _unedited(lm: LM, records: Sequence[CounterFactRecord], eval_config: EvalConfig) -> list[dict]:
    """Scores and GE of the unedited model on each record (the fluency samples of all records in one batch)."""
    return [{**record_scores(lm, r), "ge": ge} for r, ge in zip(records, _fluency(lm, records, eval_config))]


class _Editor:
    """Edits, measures and undoes one record at a time, with the statistics and prefixes computed once."""

    def __init__(self, lm: LM, config: RomeConfig, eval_config: EvalConfig, layer: int, world: World):
        self.lm, self.config, self.eval_config = lm, config, eval_config
        self.stats = None
        if config.mom2_adjustment:  # computed (and stored) on rank 0, then read by every rank
            def stats():
                return second_moment(lm, layer, config.stats_corpus, config.stats_samples)

            self.stats = world.on_main(stats) or stats()  # the other ranks read what rank 0 stored
        self.prefixes = context_prefixes(lm, config)

    def __call__(self, rec: CounterFactRecord, base: dict) -> dict:
        request = EditRequest(rec.template.format("{}"), rec.subject, rec.new)
        with rome_edit(self.lm, request, self.config, stats=self.stats, prefixes=self.prefixes) as handle:
            edited = {**record_scores(self.lm, rec), "ge": _fluency(self.lm, [rec], self.eval_config)[0]}
        return {"case_id": rec.case_id, "unedited": base, "edited": edited, "v_loss": handle.edit.losses[-1]["loss"]}


def _settings(lm: LM, config: RomeConfig, eval_config: EvalConfig, layer: int) -> dict:
    """What a resumed run must share with the interrupted one."""
    return {"model": lm.name, "layer": layer, "config": config,
            "eval": {k: v for k, v in eval_config.__dict__.items() if k != "batch"}}


def evaluate_counterfact(lm: LM, records: Sequence[CounterFactRecord], out_dir: str | Path,
                         config: RomeConfig | None = None, eval_config: EvalConfig | None = None,
                         world: World | None = None) -> CounterFactResult:
    """Edit, measure and undo every record (resuming from ``out_dir/records.jsonl``); save metrics.json + result/.

    The unedited model is measured ``eval_config.batch`` records at a time (its fluency samples in one batch; a
    sample does not depend on its batch), then each record is edited, measured and undone in turn (ROME's
    protocol). ``world``: under torchrun, each rank takes its share of the records; rank 0 merges and saves.
    """
    if not records:
        raise DataError("no CounterFact records to evaluate: the data file holds none (or --limit is 0)")
    config, eval_config, world = config or RomeConfig(), eval_config or EvalConfig(), world or World()
    layer, source = resolve_layer(lm, config)
    run = Run(out_dir, _settings(lm, config, eval_config, layer), key="case_id", world=world)
    editor = _Editor(lm, config, eval_config, layer, world)
    todo = run.todo(list(records), lambda r: r.case_id)
    bar = tqdm(desc=f"counterfact {lm.name}", unit="edit", total=len(todo), disable=not world.main)
    with run.writer() as write:
        for start in range(0, len(todo), eval_config.batch):
            chunk = todo[start:start + eval_config.batch]
            for rec, base in zip(chunk, _unedited(lm, chunk, eval_config)):
                write(editor(rec, base))
                bar.update()
    bar.close()
    done = run.merged()
    rows = [done[k] for k in dict.fromkeys(r.case_id for r in records)]
    result = CounterFactResult(model=lm.name, layer=layer, n_records=len(rows),
                               edited=summarize([r["edited"] for r in rows]),
                               unedited=summarize([r["unedited"] for r in rows]),
                               notes=_notes(records, eval_config), config=config, eval_config=eval_config,
                               layer_source=source)
    world.on_main(lambda: (result.save(run.out / "result"), write_json(run.out / "metrics.json", result.summary())))
    return result


def _notes(records: Sequence[CounterFactRecord], eval_config: EvalConfig) -> list[str]:
    notes = ["RS (consistency) is not reported: it needs ROME's reference texts about each new target "
             "(attribute snippets + TF-IDF), which the offline CounterFact files do not include."]
    n = max(1, len(records))
    para, near = (sum(len(getattr(r, k)) for r in records) / n for k in ("paraphrase_prompts", "neighborhood_prompts"))
    notes.append(f"Prompts per record: {para:.1f} paraphrase, {near:.1f} neighbourhood (the paper's CounterFact: "
                 "2 and 10).")
    if eval_config.gen_tokens > 0 and not any(r.generation_prompts for r in records):
        notes.append("GE: these records have no generation prompts (flattened layout); the fluency samples start "
                     "from the rewrite and paraphrase prompts instead.")
    return notes
