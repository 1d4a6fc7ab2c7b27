"""Activation patching (exact and attribution) over layers x positions x kinds, and the metrics it reads.

Modules, lowest first: ``config`` (PatchConfig, PatchPrompts, metrics), ``result`` (PatchingResult), ``engine``
(:func:`activation_patching`, :func:`attribution_patching`, :func:`answer_metric`), ``units`` (one unit at a time:
:func:`unit_effects`), ``ioi`` (single units on IOI: :func:`ioi_features`).
"""

from lmscope.methods.patching.config import PATCH_KINDS, Metric, PatchConfig, PatchPrompts, logit_diff, target_prob
from lmscope.methods.patching.engine import activation_patching, answer_metric, attribution_patching, prompt_pair
from lmscope.methods.patching.ioi import IOIConfig, IOIFeatureResult, ioi_features
from lmscope.methods.patching.result import PatchingResult
from lmscope.methods.patching.units import UnitEffects, unit_effects

__all__ = ["PATCH_KINDS", "IOIConfig", "IOIFeatureResult", "Metric", "PatchConfig", "PatchPrompts", "PatchingResult",
           "UnitEffects", "activation_patching", "answer_metric", "attribution_patching", "ioi_features", "logit_diff",
           "prompt_pair", "target_prob", "unit_effects"]
