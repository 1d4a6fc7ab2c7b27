"""Every command of ``lmscope``: its place in the groups, the module that defines it, its help, its old names.

This table is all the parser needs to answer ``lmscope --help`` and ``lmscope GROUP --help``: no command module
(nor torch, nor transformers) is imported until a command is chosen. A command module registers its function under
the entry's ``name`` (``lmscope.cli.registry.command``); ``tests/cli`` checks that the two agree. Old flat names
(``sae-train``, ``edit``, ``eval-edits``, ...) keep working as hidden aliases for a release.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One command: ``path`` as typed (``("sae", "train")``), its registry ``name`` and ``module``, its help."""

    path: tuple[str, ...]
    name: str
    module: str
    help: str
    aliases: tuple[str, ...] = ()

    @property
    def words(self) -> str:
        """The command as typed after ``lmscope``."""
        return " ".join(self.path)


GROUPS: dict[str, str] = {
    "model": "the bundled models: list, info",
    "lens": "lenses: one prompt through the logit or the tuned lens; train, compare and import a tuned lens",
    "trace": "causal tracing (ROME section 2): one prompt, or averaged over known facts",
    "rome": "ROME: edit a fact, its second-moment statistics, CounterFact evaluation",
    "stages": "stages of inference: the whole analysis, or one lesion",
    "sae": "sparse autoencoders: harvest, train, evaluate, feature pages",
    "patch": "activation patching of a prompt pair, and single units on IOI",
    "neurons": "MLP neurons that write a token, and neuron editing",
    "autointerp": "automated interpretability: explain and score the units of one layer; the report of a run so far",
    "vlm": "the bundled vision-language model",
    "graph": "attribution graphs over transcoders: one prompt, the transcoders as a replacement model, the "
             "intervention check of a graph",
}

ENTRIES: tuple[Entry, ...] = (
    Entry(("lens", "run"), "lens", "lmscope.cli.lens",
          "lens of one prompt (logit or tuned lens, --readout): lens.json, lens.png, report.html", ("lens",)),
    Entry(("lens", "train"), "lens-train", "lmscope.cli.lens",
          "train a tuned lens of the model on a packaged corpus (resumable); it goes into the store"),
    Entry(("lens", "eval"), "lens-eval", "lmscope.cli.lens",
          "the logit and the tuned lens layer by layer on held-out text: KL to the final layer, top-1 agreement"),
    Entry(("lens", "import"), "lens-import", "lmscope.cli.lens",
          "put a tuned lens folder (tuned-lens' config.json + params.pt, or lmscope's) into the store"),
    Entry(("model", "list"), "models", "lmscope.cli.model", "list the bundled models and what is cached",
          ("models",)),
    Entry(("model", "info"), "info", "lmscope.cli.model", "family, layers, widths and site modules of a model",
          ("info",)),
    Entry(("trace", "run"), "trace", "lmscope.cli.trace",
          "causal trace of one prompt: trace result, one PNG per kind, report.html", ("trace",)),
    Entry(("trace", "dataset"), "trace-dataset", "lmscope.cli.trace",
          "average indirect effects over known facts (resumable)", ("trace-dataset",)),
    Entry(("rome", "edit"), "edit", "lmscope.cli.rome",
          "ROME edit of one fact: saves the edit, before/after generations and P(target)", ("edit",)),
    Entry(("rome", "stats"), "stats", "lmscope.cli.rome",
          "second-moment statistics of the MLP keys at one layer (cached, resumable)", ("stats",)),
    Entry(("rome", "eval"), "eval-edits", "lmscope.cli.rome",
          "CounterFact metrics of ROME edits and of the unedited model (resumable)", ("eval-edits",)),
    Entry(("stages", "run"), "stages", "lmscope.cli.stages",
          "stages of inference: lesions, lens, locality, neurons, MLP norms + report", ("stages",)),
    Entry(("stages", "lesion"), "lesion", "lmscope.cli.stages",
          "top next tokens of one prompt before / after deleting or swapping a block", ("lesion",)),
    Entry(("sae", "harvest"), "sae-harvest", "lmscope.cli.sae",
          "harvest activations at some sites into a disk cache (resumable; under torchrun, per rank)",
          ("sae-harvest",)),
    Entry(("sae", "train"), "sae-train", "lmscope.cli.sae",
          "train one SAE or a sweep of them on one stream of activations (resumable)", ("sae-train",)),
    Entry(("sae", "eval"), "sae-eval", "lmscope.cli.sae",
          "MSE, FVE, L0, dead / dense latents and CE recovered of a saved SAE on held-out text", ("sae-eval",)),
    Entry(("sae", "export"), "sae-export", "lmscope.cli.sae",
          "write a saved SAE or transcoder (any layout lmscope reads) as an lmscope or SAELens folder",
          ("sae-export",)),
    Entry(("sae", "features"), "sae-features", "lmscope.cli.sae",
          "feature pages of a saved SAE: index.html, one page and one JSON per feature, Neuronpedia",
          ("sae-features",)),
    Entry(("patch", "run"), "patch", "lmscope.cli.patching",
          "activation patching of a clean / corrupted prompt pair: layer x position (and head) heat maps", ("patch",)),
    Entry(("patch", "ioi"), "ioi-features", "lmscope.cli.patching",
          "patch single SAE features, neurons and residual dimensions on IOI pairs; rank by effect",
          ("ioi-features",)),
    Entry(("autointerp", "run"), "autointerp", "lmscope.cli.autointerp",
          "explain SAE features, neurons and random / PCA / ICA directions of one layer, and score them"),
    Entry(("autointerp", "report"), "autointerp-report", "lmscope.cli.autointerp",
          "the scores, figure and report of the units an autointerp run has scored so far (finished or not, "
          "still running or not); loads no model"),
    Entry(("neurons", "find"), "neurons", "lmscope.cli.neurons",
          "MLP neurons that write a token: forward contribution and gradient x activation, top-k with their "
          "vocabulary, ablation against random neurons, sensitivity / specificity", ("neurons",)),
    Entry(("neurons", "edit"), "neuron-edit", "lmscope.cli.neurons",
          "move one neuron's contribution from token v0 to v1 (Pan et al.): edit/, before and after on the prompts "
          "and neighbours, report.html", ("neuron-edit",)),
    Entry(("vlm", "train-projector"), "train-projector", "lmscope.cli.projector",
          "train the projector of SmolLM2-135M + DINOv2-S/14 on rendered emoji and shapes (everything else frozen); "
          "resumable per epoch: projector.safetensors, result/, report", ("train-projector",)),
    Entry(("graph", "run"), "graph", "lmscope.cli.graphs",
          "attribution graph of one prompt over transcoders: the features behind its next-token logits, pruned, "
          "scored, as a figure, a report and circuit-tracer's graph JSON", ("graph",)),
    Entry(("graph", "eval"), "graph-eval", "lmscope.cli.graphs",
          "the transcoders as a replacement model on held-out text: each layer's FVE and L0, CE recovered with all "
          "of them in place"),
    Entry(("graph", "check"), "graph-check", "lmscope.cli.graphs",
          "the intervention check of a saved graph: its top features removed from the real model, the change of "
          "the top logit predicted by the graph against the measured one"),
    Entry(("serve",), "serve", "lmscope.cli.serve",
          "local web workbench: browse runs, run lens / trace / lesion / neurons / ROME edits in the browser"),
)

BY_NAME = {e.name: e for e in ENTRIES}
BY_PATH = {e.path: e for e in ENTRIES}
ALIASES = {alias: e for e in ENTRIES for alias in e.aliases}
# a group whose old name was a command: `lmscope trace PROMPT ...` still means `lmscope trace run PROMPT ...`
DEFAULT_SUB = {"trace": "run", "stages": "run", "patch": "run", "neurons": "find", "lens": "run", "graph": "run",
               "autointerp": "run"}
VALUE_OPTIONS = ("--model", "--device", "--dtype", "--seed")  # global options that take a value
