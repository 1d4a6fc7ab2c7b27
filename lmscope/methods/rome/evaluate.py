"""CounterFact evaluation of ROME edits (SPEC §2; ROME's ``compute_rewrite_quality_counterfact``).

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
from tqdm.auto import tqdm

from lmscope.data.facts import CounterFactRecord
from lmscope.io import Result, append_record, check_run, read_run_records, write_json
from lmscope.methods.rome.edit import EditRequest, RomeConfig, pad_right, resolve_layer, rome_edit, target_ids
from lmscope.model.lm import LM

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"


@dataclass
class EvalConfig:
    """Options of the CounterFact evaluation; the defaults are ROME's."""

    gen_tokens: int = field(default=100, metadata={
        "help": "tokens per fluency text, prompt included (ROME's max_out_len; 0: skip GE)"})
    gen_top_k: int = field(default=5, metadata={"help": "top-k of the fluency samples"})
    gen_seed: int = field(default=0, metadata={"help": "seed of the fluency samples"})


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
    ids, mask = pad_right(rows, lm.device)
    logp = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1)
    pos = torch.tensor(starts, device=lm.device)[:, None] - 1 + torch.arange(len(tgt), device=lm.device)
    picked = logp[torch.arange(len(rows), device=lm.device)[:, None], pos].gather(
        -1, torch.tensor(tgt, device=lm.device).expand(len(rows), -1).unsqueeze(-1)).squeeze(-1)
    return -picked.mean(1).cpu()


def target_probs(lm: LM, prompts: Sequence[str], target: str) -> list[float]:
    """exp(-mean token NLL) of the target after each prompt (P of a one-token target)."""
    return torch.exp(-target_nll(lm, prompts, target)).tolist()


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


class _TopKPerRow:
    """A logits processor that draws each row's next token from its own seeded generator (top-k, ROME's sampler).

    It returns one-hot scores for greedy decoding to pick, so a row's sample does not depend on the other rows
    of the batch. End-of-text is never drawn: every row runs its full length.
    """

    def __init__(self, seeds: Sequence[int], top_k: int, eos: int | None):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.top_k, self.eos = top_k, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # scores: (rows, vocab)
        scores = scores.float()
        if self.eos is not None:
            scores[:, self.eos] = -math.inf
        top = scores.topk(self.top_k, dim=-1)
        probs = torch.softmax(top.values, -1).cpu()  # (rows, top_k)
        picks = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.gens)])
        chosen = top.indices.gather(1, picks.to(top.indices.device))  # (rows, 1)
        return torch.full_like(scores, -math.inf).scatter_(1, chosen, 0.0)


@torch.no_grad()
def sample_ids(lm: LM, prompts: Sequence[str], config: EvalConfig,
               seeds: Sequence[int] | None = None) -> list[list[int]]:
    """Top-k samples after each prompt, ``gen_tokens`` ids per row with the prompt (ROME's ``max_out_len``).

    All prompts run in one batch (left-padded, masked); row i draws from a generator seeded with ``seeds[i]``
    (default: ``gen_seed + i``), so a sample is the same alone or in any batch (up to float rounding).
    """
    seeds = [config.gen_seed + i for i in range(len(prompts))] if seeds is None else seeds
    eos = lm.tokenizer.eos_token_id
    pad = lm.tokenizer.pad_token_id
    pad = eos if pad is None else pad
    rows = [lm.tokenizer(p)["input_ids"] for p in prompts]
    ids, mask = pad_right(rows, lm.device, left=True, pad_id=pad)
    new = config.gen_tokens - min(len(r) for r in rows)
    out = ids
    if new > 0:
        out = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                                max_new_tokens=new, pad_token_id=pad, repetition_penalty=None,
                                logits_processor=[_TopKPerRow(seeds, config.gen_top_k, eos)])
    width = ids.shape[1]
    return [list(r) + out[i, width:width + max(config.gen_tokens - len(r), 0)].tolist() for i, r in enumerate(rows)]


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


def _unedited(lm: LM, records: Sequence[CounterFactRecord], eval_config: EvalConfig) -> list[dict]:
    """Scores and GE of the unedited model on each record (the fluency samples of all records in one batch)."""
    return [{**record_scores(lm, r), "ge": ge} for r, ge in zip(records, _fluency(lm, records, eval_config))]


def _evaluate_record(lm: LM, rec: CounterFactRecord, base: dict, config: RomeConfig, eval_config: EvalConfig,
                     stats) -> dict:
    request = EditRequest(rec.template.format("{}"), rec.subject, rec.new)
    with rome_edit(lm, request, config, stats=stats) as handle:
        edited = {**record_scores(lm, rec), "ge": _fluency(lm, [rec], eval_config)[0]}
    return {"case_id": rec.case_id, "unedited": base, "edited": edited, "v_loss": handle.edit.losses[-1]["loss"]}


def evaluate_counterfact(lm: LM, records: Sequence[CounterFactRecord], out_dir: str | Path,
                         config: RomeConfig | None = None, eval_config: EvalConfig | None = None,
                         batch: int = 16) -> CounterFactResult:
    """Edit, measure and undo every record (resuming from ``out_dir/records.jsonl``); save metrics.json + result/.

    The unedited model is measured ``batch`` records at a time (its fluency samples in one batch; a sample does
    not depend on its batch), then each record is edited, measured and undone in turn (ROME's protocol).
    """
    config, eval_config = config or RomeConfig(), eval_config or EvalConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layer = resolve_layer(lm, config)
    _check_run(out, lm, config, eval_config, layer)
    stats = None
    if config.mom2_adjustment:
        from lmscope.methods.rome.stats import second_moment

        stats = second_moment(lm, layer, config.stats_corpus, config.stats_samples)
    done = {r["case_id"]: r for r in read_run_records(out / RECORDS)}
    todo = [r for r in records if r.case_id not in done]
    bar = tqdm(desc=f"counterfact {lm.name}", unit="edit", initial=len(records) - len(todo), total=len(records))
    with (out / RECORDS).open("a") as sink:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            for rec, base in zip(chunk, _unedited(lm, chunk, eval_config)):
                row = _evaluate_record(lm, rec, base, config, eval_config, stats)
                append_record(sink, row)
                done[rec.case_id] = row
                bar.update()
    bar.close()
    rows = [done[r.case_id] for r in records]
    result = CounterFactResult(model=lm.name, layer=layer, n_records=len(rows),
                               edited=summarize([r["edited"] for r in rows]),
                               unedited=summarize([r["unedited"] for r in rows]),
                               notes=_notes(records, eval_config), config=config, eval_config=eval_config)
    result.save(out / "result")
    write_json(out / "metrics.json", {"model": lm.name, "layer": layer, "records": len(rows),
                                      "edited": result.edited, "unedited": result.unedited, "notes": result.notes})
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


def _check_run(out: Path, lm: LM, config: RomeConfig, eval_config: EvalConfig, layer: int) -> None:
    """Refuse to resume a run made with another model or configuration."""
    from lmscope.io import _to_json

    check_run(out, {"model": lm.name, "layer": layer, "config": _to_json(config), "eval": _to_json(eval_config)})
