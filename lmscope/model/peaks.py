"""Where a model's MLPs recall facts: the MLP AIE peak at the last subject token, which ROME's ``layer="auto"`` uses.

Candidates are the peak shipped with a bundled model (measured for docs/causal-tracing.md) and every finished
dataset trace that traced only facts the model predicts (ROME's protocol), recorded one entry per output folder in
the store. ``auto`` takes the candidate measured over the most facts, and says which one it took: a short
``--limit 6`` run or an ``--all-facts`` run never replaces the documented layer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from lmscope import store
from lmscope.errors import ArtifactError, InputError
from lmscope.io import read_json, write_json
from lmscope.model.lm import LM
from lmscope.model.loading import REGISTRY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peak:
    """One measured MLP peak: the layer, its AIE, the facts behind it, and where it came from."""

    layer: int
    facts: int  # facts traced (predicted by the model)
    source: str  # an output folder, or "bundled"
    aie: float | None = None
    only_predicted: bool = True
    fingerprint: str = ""

    def describe(self) -> str:
        """One line naming the layer and where it comes from."""
        where = "the peak shipped with the model" if self.source == "bundled" else f"the dataset trace in {self.source}"
        return f"layer {self.layer}: MLP AIE peak at the last subject token over {self.facts} facts ({where})"


def recorded_peaks(model: str) -> list[Peak]:
    """Every peak recorded for ``model`` by finished dataset traces (a corrupt record file counts as none)."""
    path = store.trace_peaks_file(model)
    if not path.is_file():
        return []
    try:
        return [Peak(**entry) for entry in read_json(path).get("runs", [])]
    except (ArtifactError, AttributeError, TypeError) as err:
        log.warning("ignoring the trace peaks in %s: %s", path, err)
        return []


def record_peak(model: str, peak: Peak) -> None:
    """Record the peak of one finished dataset trace (replacing an earlier record of the same output folder)."""
    path = store.trace_peaks_file(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = [p for p in recorded_peaks(model) if p.source != peak.source] + [peak]
    write_json(path, {"model": model, "runs": [asdict(p) for p in runs]})


def best_peak(lm: LM) -> Peak | None:
    """The peak measured over the most predicted facts: shipped with the model, or from a recorded trace."""
    bundled = REGISTRY.get(lm.name)
    candidates = [Peak(*bundled.known_peak, source="bundled")] if bundled and bundled.known_peak else []
    candidates += [p for p in recorded_peaks(lm.name) if p.only_predicted]
    return max(candidates, key=lambda p: p.facts, default=None)


def auto_layer(lm: LM) -> Peak:
    """The edit layer for ``layer="auto"``, or one clear error when no peak is known for this model."""
    peak = best_peak(lm)
    if peak is None:
        raise InputError(f"layer='auto' needs the MLP peak of {lm.name}: run `lmscope trace-dataset --model "
                         f"{lm.name} --data known_1000.json` once, or give the layer")
    log.info("edit layer %s", peak.describe())
    return peak
