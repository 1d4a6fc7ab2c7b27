"""Causal tracing (Meng et al. 2022, ROME §2).

Modules, lowest first: ``config`` (TraceConfig, names), ``noise`` (scale and draws), ``engine`` (batched
restorations), ``prepare`` (the clean and corrupted runs), ``trace`` (:func:`causal_trace`, the public entry for
one prompt), ``reference`` (ROME's procedure, the test oracle), ``dataset`` (average effects over known facts).
"""

from lmscope.methods.trace.config import SITE_KIND, TRACE_KINDS, TraceConfig, window_layers
from lmscope.methods.trace.dataset import GROUPS, TraceDatasetResult, token_groups, trace_dataset
from lmscope.methods.trace.noise import embedding_std, noise_scale
from lmscope.methods.trace.reference import reference_trace
from lmscope.methods.trace.trace import TraceResult, causal_trace, restored_prob

__all__ = [
    "GROUPS", "SITE_KIND", "TRACE_KINDS", "TraceConfig", "TraceDatasetResult", "TraceResult", "causal_trace",
    "embedding_std", "noise_scale", "reference_trace", "restored_prob", "token_groups", "trace_dataset",
    "window_layers",
]
