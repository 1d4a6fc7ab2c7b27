"""Causal tracing over a dataset of facts (ROME's average indirect effect over a dataset).

Each fact is traced with the same noise scale and seed; its indirect effects are reduced to six token groups
(first / middle / last subject token, first subsequent token, further tokens, last token) and appended as one
JSON line to ``records.jsonl`` in the output folder, flushed to disk. A killed run resumes from that file (a torn
last line is dropped) and gives the same numbers as an uninterrupted one. Only facts whose answer the model
predicts (top-1 = the first token of the attribute) are traced, as in ROME; the others are recorded as skipped.
When the model predicts none of them there is nothing to average: that is an error, and a run folder this call
started is removed again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmscope.data.facts import KnownFact
from lmscope.distributed import World
from lmscope.errors import DataError
from lmscope.io import Result
from lmscope.methods.trace.config import TraceConfig
from lmscope.methods.trace.noise import noise_scale
from lmscope.methods.trace.trace import causal_trace
from lmscope.model.lm import LM
from lmscope.model.peaks import Peak, record_peak
from lmscope.progress import tqdm
from lmscope.runs import SETTINGS, Run

log = logging.getLogger(__name__)

GROUPS = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
          "further tokens", "last token")


@dataclass
class TraceDatasetResult(Result):
    """Average indirect effect per (token group, layer) and kind, and the average total effect."""

    model: str
    n_facts: int  # facts read
    n_kept: int  # facts the model predicts, which were traced
    groups: list[str]
    aie: dict[str, torch.Tensor]  # kind -> (n_groups, n_layers) mean of P*_restored - P*
    group_counts: list[int]  # facts that have each group (a one-token subject has no middle tokens)
    ate: float  # mean of P - P*
    mean_clean_prob: float
    mean_corrupted_prob: float
    config: TraceConfig = field(default_factory=TraceConfig)
    only_predicted: bool = True  # traced only the facts the model predicts (ROME's protocol)

    def peak(self, kind: str, group: str = "last subject token") -> tuple[int, float]:
        """(layer, AIE) of the largest average indirect effect of ``kind`` at one token group."""
        row = self.aie[kind][self.groups.index(group)]
        layer = int(row.argmax())
        return layer, float(row[layer])

    def summary(self) -> dict:
        """Counts, ATE and, per kind, the AIE peak at the last subject token."""
        peaks = {k: dict(zip(("layer", "aie"), self.peak(k))) for k in self.aie} if self.n_kept else {}
        return {"model": self.model, "facts": self.n_facts, "traced": self.n_kept, "ate": self.ate,
                "mean_clean_prob": self.mean_clean_prob, "mean_corrupted_prob": self.mean_corrupted_prob,
                "only_predicted": self.only_predicted, "peaks_last_subject_token": peaks}


def token_groups(span: tuple[int, int], n_pos: int) -> list[list[int]]:
    """Positions of the six token groups (possibly empty) for a subject span [b, e) in a prompt of n_pos tokens."""
    b, e = span
    last = n_pos - 1
    return [[b], list(range(b + 1, e - 1)), [e - 1], [e] if e < last else [], list(range(e + 1, last)), [last]]


def _reduce(ie: torch.Tensor, groups: list[list[int]]) -> list[list[float] | None]:
    """ie: (pos, n_layers) -> per group the mean over its positions (n_layers,), or None if it is empty."""
    return [ie[g].mean(0).tolist() if g else None for g in groups]


def predicts(lm: LM, fact: KnownFact) -> tuple[bool, str]:
    """Whether the model's top-1 next token is the first token of the fact's attribute; and that token."""
    with torch.no_grad():
        logits = lm(lm.tokenize(fact.prompt)["input_ids"])[0, -1]
    top = int(logits.argmax())
    answer = lm.tokenizer(" " + fact.attribute.strip(), add_special_tokens=False)["input_ids"]
    return bool(answer) and answer[0] == top, lm.to_str_tokens([top])[0]


def _trace_record(lm: LM, fact: KnownFact, config: TraceConfig, only_predicted: bool) -> dict:
    ok, top = predicts(lm, fact)
    record = {"known_id": fact.known_id, "prediction": top, "kept": ok or not only_predicted}
    if not record["kept"]:
        return record
    result = causal_trace(lm, fact.prompt, fact.subject, config=config)
    groups = token_groups(result.subject_range, len(result.tokens))
    record.update(p_clean=result.clean_prob, p_corrupt=result.corrupted_prob, span=list(result.subject_range),
                  groups={k: _reduce(result.indirect_effect(k), groups) for k in result.scores})
    return record


def _aggregate(lm: LM, records: list[dict], n_facts: int, config: TraceConfig,
               only_predicted: bool) -> TraceDatasetResult:
    kept = [r for r in records if r["kept"]]
    kinds = list(kept[0]["groups"]) if kept else list(config.kinds)
    aie, counts = {}, [0] * len(GROUPS)
    for kind in kinds:
        sums, counts = torch.zeros(len(GROUPS), lm.n_layers, dtype=torch.float64), [0] * len(GROUPS)
        for r in kept:
            for g, row in enumerate(r["groups"][kind]):
                if row is not None:
                    sums[g] += torch.tensor(row, dtype=torch.float64)
                    counts[g] += 1
        aie[kind] = (sums / torch.tensor(counts, dtype=torch.float64).clamp_min(1)[:, None]).float()

    def mean(key: str) -> float:
        return sum(r[key] for r in kept) / len(kept) if kept else float("nan")

    return TraceDatasetResult(
        model=lm.name, n_facts=n_facts, n_kept=len(kept), groups=list(GROUPS), aie=aie, group_counts=counts,
        ate=mean("p_clean") - mean("p_corrupt"), mean_clean_prob=mean("p_clean"),
        mean_corrupted_prob=mean("p_corrupt"), config=config, only_predicted=only_predicted)


def _save(lm: LM, result: TraceDatasetResult, out: Path, only_predicted: bool) -> None:
    """Save the averages and record the run's MLP peak (rank 0)."""
    result.save(out / "result")
    if result.n_kept and "mlp" in result.aie:
        layer, value = result.peak("mlp")
        record_peak(lm.name, Peak(layer, result.n_kept, str(out.resolve()), value, only_predicted, lm.fingerprint()))


def _settings(lm: LM, config: TraceConfig, only_predicted: bool) -> dict:
    """What a resumed run must share with the interrupted one (its records would be mixed otherwise).

    Tracing every fact is recorded only when asked for, so that the folders of ROME's protocol keep their settings.
    """
    settings = {"model": lm.name, "fingerprint": lm.fingerprint(), "config": {
        k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items() if k != "batch_tokens"}}
    return settings if only_predicted else {**settings, "all_facts": True}


def _nothing_predicted(lm: LM, facts: Sequence[KnownFact], records: list[dict]) -> DataError:
    """The error of a run in which the model predicts none of the facts (with a few of its predictions)."""
    attribute = {f.known_id: f.attribute for f in facts}
    seen = ", ".join(f"{attribute[r['known_id']]!r} -> {r['prediction']!r}" for r in records[:3])
    return DataError(f"{lm.name} predicts none of the {len(records)} facts tried (its top-1 token is never the first "
                     f"token of the attribute; expected -> predicted: {seen}{', ...' if len(records) > 3 else ''}); "
                     "nothing to average: try more facts, or --all-facts to trace them anyway")


def _remove_run(folder: Path, existed: bool) -> None:
    """Remove the records and settings a failed run wrote into ``folder`` (and the folder, if it made it)."""
    for path in [*folder.glob("records*.jsonl"), folder / SETTINGS]:
        path.unlink(missing_ok=True)
    if not existed and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def trace_dataset(lm: LM, facts: Sequence[KnownFact], out_dir: str | Path, config: TraceConfig | None = None,
                  only_predicted: bool = True, world: World | None = None) -> TraceDatasetResult:
    """Trace every fact (resuming from ``out_dir/records.jsonl``) and save the averages to ``out_dir/result``.

    A finished run records its MLP peak at the last subject token for ROME's ``layer="auto"``
    (:mod:`lmscope.model.peaks`). ``world``: under torchrun, each rank traces its share; rank 0 merges and saves.
    A model that predicts none of the facts (``only_predicted``) raises :class:`DataError`; the records of a run
    this call started are removed then.
    """
    if not facts:
        raise DataError("no facts to trace: the data file holds no records (or --limit is 0)")
    config, world = config or TraceConfig(), world or World()
    folder = Path(out_dir)
    existed, fresh = folder.exists(), not (folder / SETTINGS).exists()
    run = Run(out_dir, _settings(lm, config, only_predicted), key="known_id", world=world)
    scale = world.on_main(lambda: noise_scale(lm, config))  # estimated and stored once, on rank 0
    config = dataclasses.replace(config, noise=scale if scale is not None else noise_scale(lm, config))
    todo = run.todo(list(facts), lambda f: f.known_id)
    if len(todo) < len(facts):
        log.info("resuming: %d of %d facts already traced in %s", len(facts) - len(todo), len(facts), run.out)
    with run.writer() as write:
        for fact in tqdm(todo, desc=f"trace {lm.name}", unit="fact", disable=not world.main):
            write(_trace_record(lm, fact, config, only_predicted))
    done = run.merged()
    records = [done[k] for k in dict.fromkeys(f.known_id for f in facts)]
    if not any(r["kept"] for r in records):
        world.barrier()  # every rank has read the records before rank 0 removes them
        world.on_main(lambda: _remove_run(run.out, existed) if fresh else None)
        raise _nothing_predicted(lm, facts, records)
    result = _aggregate(lm, records, len(facts), config, only_predicted)
    world.on_main(lambda: _save(lm, result, run.out, only_predicted))
    log.info("traced %d of %d facts (the others are not predicted by %s)", result.n_kept, len(facts), lm.name)
    return result
