"""Stages of inference (Lad, Gurnee & Tegmark 2024).

Modules, lowest first: ``config`` (StagesConfig, LesionConfig), ``neurons`` (vocabulary moments of W_U w_out),
``metrics`` (per-token measures), ``lesion`` (delete / swap sweeps and one-prompt lesions), ``analysis``
(:func:`stages`, the public entry).
"""

from lmscope.methods.stages.analysis import StagesResult, stages
from lmscope.methods.stages.config import METRICS, MODES, LesionConfig, StagesConfig
from lmscope.methods.stages.lesion import LesionResult, lesion, lesion_prompt
from lmscope.methods.stages.neurons import neuron_vocab_moments

__all__ = [
    "METRICS", "MODES", "LesionConfig", "LesionResult", "StagesConfig", "StagesResult", "lesion", "lesion_prompt",
    "neuron_vocab_moments", "stages",
]
