"""The ROME commands: ``edit`` (one fact), ``stats`` (E[k k^T] at one layer) and ``eval-edits`` (CounterFact)."""

from __future__ import annotations

from pathlib import Path

from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.data.facts import load_counterfact
from lmscope.distributed import World
from lmscope.io import write_json
from lmscope.methods.rome import EditRequest, EvalConfig, RomeConfig, StatsConfig, evaluate_counterfact, rome_edit
from lmscope.methods.rome.evaluate import request_state
from lmscope.methods.rome.stats import second_moment, stats_path
from lmscope.viz.rome import counterfact_report


@command("edit",
         arg("--prompt", required=True, help="template with {} for the subject, e.g. '{} is located in'"),
         arg("--subject", required=True, help="the subject, e.g. 'The Eiffel Tower'"),
         arg("--target", required=True, help="the new answer, e.g. ' Rome'"),
         arg("--max-new-tokens", type=int, default=20, help="greedy tokens generated before / after (default: 20)"),
         configs=(RomeConfig,), out="out/edit")
def edit(args) -> int:
    """Edit one fact with ROME; write the edit (cfg.json + safetensors) and edit.json with before / after."""
    cfg = config(args, RomeConfig)
    request = EditRequest(args.prompt, args.subject, args.target)
    lm = load_model(args)
    before = request_state(lm, request, args.max_new_tokens)
    handle = rome_edit(lm, request, cfg)
    after = request_state(lm, request, args.max_new_tokens)
    out = out_dir(args)
    handle.edit.save(out / "edit")
    write_json(out / "edit.json", {**handle.edit.summary(), "before": before, "after": after})
    print(f"{lm.name}: edited {handle.edit.layer_source if cfg.layer == 'auto' else f'layer {handle.edit.layer}'}")
    print(f"  {request.text!r} -> {request.target!r}")
    print(f"  before: P(target) = {before['p_target']:.4f}   {request.text}{before['generation']!r}")
    print(f"  after:  P(target) = {after['p_target']:.4f}   {request.text}{after['generation']!r}")
    print(f"wrote {out}/edit/ (apply it with lmscope.apply_edit) and {out}/edit.json")
    return 0


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
