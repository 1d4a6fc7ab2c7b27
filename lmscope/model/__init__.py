"""The model layer: loading, family specs, typed sites, the hook core, and the helpers every method shares.

Modules, lowest first: ``precision`` (whether bfloat16 is fast here), ``sites``, ``weights`` (weight patches, the
edit handle), ``families``, ``patterns``, ``hooks``, ``lm`` (the wrapper), ``units`` (the units of a site),
``tokens``, ``generate``, ``kv`` (the model's KV cache), ``surgery`` (block surgery), ``readout`` (how a layer's
prediction is read: the logit lens or a tuned lens), ``linearize`` (the model with attention patterns and norm
denominators frozen), ``edits`` (W_out edits and their digest), ``peaks`` (the MLP peaks ROME's layer comes from),
``vision`` (the bundled image encoder), ``vlm`` (the LLaVA assembly), ``vlm_layouts`` (which pixels each image token
of a VLM family covers), ``loading``.
"""

from lmscope.errors import FamilySpecError, HookError, InputError, ModelNotFoundError, PatternHookError, SiteError
from lmscope.model.families import FAMILIES, FamilySpec, infer_spec
from lmscope.model.hooks import ActivationCache, Cache, Op, add, apply, capture, hooks, replace, zero
from lmscope.model.lm import LM
from lmscope.model.loading import DEFAULT_MODEL, REGISTRY, list_models, load
from lmscope.model.sites import KINDS, ModuleSite, Site

__all__ = [
    "FAMILIES", "KINDS", "REGISTRY", "DEFAULT_MODEL", "LM", "ActivationCache", "Cache", "FamilySpec",
    "FamilySpecError", "HookError", "InputError", "ModelNotFoundError", "ModuleSite", "Op", "PatternHookError",
    "Site", "SiteError", "add", "apply", "capture", "hooks", "infer_spec", "list_models", "load", "replace", "zero",
]
