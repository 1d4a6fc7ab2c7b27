"""The ROME commands: ``edit`` (one fact), ``stats`` (E[k k^T] at one layer) and ``eval-edits`` (CounterFact)."""

from __future__ import annotations

from pathlib import Path

from lmscope.cli.operations import operation_command
from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.data.facts import load_counterfact
from lmscope.distributed import World
from lmscope.methods.rome import EvalConfig, RomeConfig, StatsConfig, evaluate_counterfact
from lmscope.methods.rome.stats import second_moment, stats_path
from lmscope.ops import EDIT
from lmscope.viz.rome import counterfact_report

edit = operation_command("edit", EDIT, out="out/edit",
                         wrote="edit.json and result/ (the edit: apply it to a fresh model with lmscope.apply_edit)")


@command("stats", configs=(StatsConfig,))
def stats(args) -> int:
    """Compute (or find in the store) the second moment of the MLP keys at one layer."""
    cfg = config(args, StatsConfig)
    lm = load_model(args)
    moment = second_moment(lm, cfg.layer, cfg.corpus, cfg.samples, cfg.max_len, cfg.batch_tokens)
    print(f"{lm.name}: layer {moment.layer}: E[k k^T] over {moment.texts} texts, {moment.tokens} tokens of "
          f"{moment.corpus} -> {stats_path(lm, moment.layer, cfg.corpus, cfg.samples, moment.max_len)}")
    return 0


@command("eval-edits",
         arg("--data", type=Path, required=True, help="CounterFact JSON (flattened or ROME's nested layout)"),
         arg("--limit", type=int, help="evaluate only the first N records"),
         configs=(RomeConfig, EvalConfig), out="out/eval-edits")
def eval_edits(args) -> int:
    """Evaluate ROME on CounterFact records: metrics.json, records.jsonl, result/, report.html."""
    cfg, eval_cfg = config(args, RomeConfig), config(args, EvalConfig)
    records = load_counterfact(args.data, args.limit)
    lm = load_model(args)
    out, world = out_dir(args), World.from_env(lm.device)  # under torchrun: each rank edits its share
    result = evaluate_counterfact(lm, records, out, cfg, eval_cfg, world=world)
    if not world.main:
        return 0
    counterfact_report(result).write(out / "report.html")
    names = list(result.edited)
    print(f"{lm.name}: {result.n_records} CounterFact records, edit layer {result.layer} ({result.layer_source})")
    print("  " + " ".join(f"{n:>7}" for n in ["", *names]))
    for label, metrics in (("ROME", result.edited), ("none", result.unedited)):
        print("  " + f"{label:>7}" + " ".join(f"{metrics.get(n, float('nan')):7.1f}" for n in names))
    for note in result.notes:
        print(f"  note: {note}")
    print(f"wrote {out}/metrics.json, records.jsonl, result/ and report.html")
    return 0
