"""Activation patching (exact and attribution) over layers x positions x kinds, and the metrics it reads.

Modules, lowest first: ``config`` (PatchConfig, metrics), ``result`` (PatchingResult), ``engine``
(:func:`activation_patching`, :func:`attribution_patching`).
"""

from lmscope.methods.patching.config import PATCH_KINDS, Metric, PatchConfig, logit_diff, target_prob
from lmscope.methods.patching.engine import activation_patching, attribution_patching, prompt_pair
from lmscope.methods.patching.result import PatchingResult

__all__ = ["PATCH_KINDS", "Metric", "PatchConfig", "PatchingResult", "activation_patching", "attribution_patching",
           "logit_diff", "prompt_pair", "target_prob"]
