"""Automated interpretability (Bills et al. 2023; Cunningham et al. 2023 §3): explain units, simulate, score.

Modules, lowest first: ``config`` (SampleConfig, ScoreConfig), ``units`` (SAE features, neurons, random / PCA / ICA
directions, planted controls), ``sampling`` (one pass over the corpus; disjoint explain / score excerpts),
``backends`` (a local LM or an OpenAI-compatible endpoint; prompts in ``prompts/``), ``scoring`` (explanation;
simulation, detection and fuzzing scores), ``run`` (:func:`autointerp`, resumable, and its result;
:func:`scored_so_far`: the result of a run part way; :func:`merged`: several runs in one comparison).
"""

from lmscope.methods.autointerp.backends import Backend, HttpBackend, LocalBackend, check_prompts, load_prompt
from lmscope.methods.autointerp.config import UNIT_KINDS, SampleConfig, ScoreConfig
from lmscope.methods.autointerp.run import (
    AutointerpResult,
    autointerp,
    bootstrap_ci,
    merged,
    relabelled,
    runs_so_far,
    scored_so_far,
)
from lmscope.methods.autointerp.scoring import auroc, balanced_accuracy, correlation, score_unit
from lmscope.methods.autointerp.units import fast_ica

__all__ = ["AutointerpResult", "Backend", "HttpBackend", "LocalBackend", "SampleConfig", "ScoreConfig", "UNIT_KINDS",
           "auroc", "autointerp", "balanced_accuracy", "bootstrap_ci", "check_prompts", "correlation", "fast_ica",
           "load_prompt", "merged", "relabelled", "runs_so_far", "score_unit", "scored_so_far"]
